"""kNN classification over a search's neighbours, and the similarity threshold below which it answers "unknown".

The answer for a query is the label most of its k neighbours carry (neighbours without a label do not vote; a tie
goes to the label whose neighbours' similarities sum higher, then to the nearest). Its confidence is the similarity
of the nearest neighbour that carries the answer. Below the threshold the answer is "unknown" (None): the query is
taken for an image of no class of the catalogue.

The threshold is chosen on labelled queries (`choose_threshold`): a false match is an answer (not "unknown") that
is not the query's label, whether the query's class is in the catalogue or not; the false-match rate is their
number over all queries. The chosen threshold is the lowest one whose false-match rate is at most the target: of
the thresholds that keep false matches that rare, the one that answers the most queries. Exactly: with n queries
and m the most false matches the target allows (m / n <= target), the threshold is None (none needed) where at most
m answers are wrong, else the float64 just above the (m+1)-th highest confidence of a wrong answer.
"""
import math
from collections import defaultdict

import numpy as np

UNKNOWN = None


def vote(labels, similarities):
    """(answer, confidence) of one query from its neighbours' `labels` (None: unlabelled) and `similarities`, best
    first; (None, nan) where no neighbour has a label."""
    votes, weight, nearest = defaultdict(int), defaultdict(float), {}
    for rank, (label, similarity) in enumerate(zip(labels, similarities)):
        if label is None or not np.isfinite(similarity):
            continue
        votes[label] += 1
        weight[label] += float(similarity)
        nearest.setdefault(label, (rank, float(similarity)))
    if not votes:
        return UNKNOWN, float('nan')
    answer = min(votes, key=lambda label: (-votes[label], -weight[label], nearest[label][0]))
    return answer, nearest[answer][1]


def thresholded(answer, confidence, threshold):
    """The answer, or UNKNOWN where its confidence is below `threshold` (None: no threshold)."""
    if answer is UNKNOWN or threshold is None or confidence >= threshold:
        return answer
    return UNKNOWN


def rates(answers, confidences, truths, threshold):
    """{'false_match', 'correct', 'unknown'} rates over all queries at `threshold` (None: no threshold)."""
    answers, truths = list(answers), list(truths)
    answered = np.array([thresholded(answer, confidence, threshold) is not UNKNOWN
                         for answer, confidence in zip(answers, confidences)], dtype=bool)
    right = np.array([answer == truth for answer, truth in zip(answers, truths)], dtype=bool)
    n = max(len(answers), 1)
    return {'false_match': float((answered & ~right).sum() / n), 'correct': float((answered & right).sum() / n),
            'unknown': float((~answered).sum() / n)}


def allowed_false_matches(n, max_false_match):
    """The most false matches m among `n` queries with m / n <= `max_false_match` (exact, not rounded)."""
    m = math.floor(max_false_match * n)
    while m + 1 <= n and (m + 1) / n <= max_false_match:
        m += 1
    while m > 0 and m / n > max_false_match:
        m -= 1
    return max(m, 0)


def choose_threshold(answers, confidences, truths, max_false_match):
    """The lowest threshold whose false-match rate on these labelled queries is at most `max_false_match`, and
    the rates it gives: {'threshold', 'rejected_confidence', 'false_match_rate', 'correct_rate', 'unknown_rate',
    'rejects_all'}.

    `answers` and `confidences` are vote()'s for each query, `truths` the queries' labels; a query is answered at
    threshold t when its confidence >= t. The false matches at t are the wrong answers with confidence >= t, a count
    that only drops just above the confidence of a wrong answer. So with m = allowed_false_matches(n, target) and
    w the (m+1)-th highest confidence of a wrong answer, every t <= w gives more than m false matches and every
    t > w at most m: the lowest threshold is the float64 just above w (`rejected_confidence`: w), and every query
    more confident than w is answered (one as confident as w is not, right or wrong: a tie is rejected whole). With
    at most m wrong answers no threshold is needed: None, every answer stands.
    """
    answers, truths = list(answers), list(truths)
    confidences = np.asarray(confidences, dtype=np.float64)
    wrong = np.array([answer is not UNKNOWN and answer != truth for answer, truth in zip(answers, truths)], dtype=bool)
    wrong_confidences = np.sort(np.nan_to_num(confidences[wrong], nan=-np.inf))[::-1]
    m = allowed_false_matches(len(answers), max_false_match)
    rejected = float(wrong_confidences[m]) if len(wrong_confidences) > m else None
    threshold = None if rejected is None else float(np.nextafter(rejected, np.inf))
    chosen = rates(answers, confidences, truths, threshold)
    return {'threshold': threshold, 'rejected_confidence': rejected, 'false_match_rate': chosen['false_match'],
            'correct_rate': chosen['correct'], 'unknown_rate': chosen['unknown'],
            'rejects_all': chosen['unknown'] == 1.0 and len(answers) > 0}
