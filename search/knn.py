"""kNN classification over a search's neighbours, and the similarity threshold below which it answers "unknown".

The answer for a query is the label most of its k neighbours carry (neighbours without a label do not vote; a tie
goes to the label whose neighbours' similarities sum higher, then to the nearest). Its confidence is the similarity
of the nearest neighbour that carries the answer. Below the threshold the answer is "unknown" (None): the query is
taken for an image of no class of the catalogue.

The threshold is chosen on labelled queries (`choose_threshold`): a false match is an answer (not "unknown") that
is not the query's label, whether the query's class is in the catalogue or not; the false-match rate is their
number over all queries. The chosen threshold is the lowest one whose false-match rate is at most the target: of
the thresholds that keep false matches that rare, the one that answers the most queries.
"""
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
    """{'false_match', 'correct', 'unknown'} rates over all queries at `threshold`."""
    answers, truths = list(answers), list(truths)
    confidences = np.asarray(confidences, dtype=np.float64)
    answered = np.array([answer is not UNKNOWN for answer in answers]) & (np.nan_to_num(confidences, nan=-np.inf)
                                                                          >= threshold)
    right = np.array([answer == truth for answer, truth in zip(answers, truths)], dtype=bool)
    n = max(len(answers), 1)
    return {'false_match': float((answered & ~right).sum() / n), 'correct': float((answered & right).sum() / n),
            'unknown': float((~answered).sum() / n)}


def choose_threshold(answers, confidences, truths, max_false_match):
    """The lowest threshold whose false-match rate on these labelled queries is at most `max_false_match`, and
    the rates it gives: {'threshold', 'false_match_rate', 'correct_rate', 'unknown_rate', 'rejects_all'}.

    `answers` and `confidences` are vote()'s for each query, `truths` the queries' labels. The candidates are the
    confidences themselves (a query is answered at threshold t when its confidence >= t) and one just above the
    highest (every query unknown), which always meets the target.
    """
    confidences = np.asarray(confidences, dtype=np.float64)
    finite = confidences[np.isfinite(confidences)]
    top = float(finite.max()) if finite.size else 0.0
    candidates = np.unique(np.append(finite, np.nextafter(top, np.inf)))
    answers, truths = list(answers), list(truths)
    wrong = np.array([answer is not UNKNOWN and answer != truth for answer, truth in zip(answers, truths)])
    wrong_confidences = np.sort(np.nan_to_num(confidences[wrong], nan=-np.inf))
    n = max(len(answers), 1)
    # False matches at threshold t: the wrong answers whose confidence >= t (non-increasing in t).
    false_matches = len(wrong_confidences) - np.searchsorted(wrong_confidences, candidates, side='left')
    feasible = np.flatnonzero(false_matches / n <= max_false_match)
    threshold = float(candidates[feasible[0]])
    chosen = rates(answers, confidences, truths, threshold)
    return {'threshold': threshold, 'false_match_rate': chosen['false_match'], 'correct_rate': chosen['correct'],
            'unknown_rate': chosen['unknown'], 'rejects_all': chosen['unknown'] == 1.0 and len(answers) > 0}
