"""The record of a run: per-epoch history, best value and epoch per metric, the processes that worked on it;
summary.json and metrics.csv."""
import csv
import io
import json
import os

from plumbing.files import atomic_write_json, atomic_write_text
from run_folder.record import now

COLLAPSED = 'collapsed'
"""The history key that marks an epoch whose test embeddings collapsed (val_collapsed: its validation embeddings)."""


class RunSummary:
    """History of epoch entries (plain dicts) plus the best value and epoch of every metric.

    `sessions`: one record per process that trained the run (its start, then each resume), see
    run_folder.record.describe_run; the newest one's 'ended' is stamped on every save.
    """

    def __init__(self, metric_names, history=None, config=None, sessions=None):
        self.metric_names = list(metric_names)
        self.history = list(history or [])
        self.config = config or {}
        self.sessions = list(sessions or [])

    def add_epoch(self, entry):
        self.history.append(dict(entry))

    def best_epochs(self):
        """metric name -> (best value, epoch of it): the highest value (every metric is higher-is-better) of the
        epochs whose embeddings of that metric's split did not collapse; ties keep the earliest epoch."""
        best = {}
        for entry in self.history:
            for name in self.metric_names:
                value = entry.get(name)
                collapsed = entry.get(('val_' if name.startswith('val_') else '') + COLLAPSED)
                if value is not None and not collapsed and (name not in best or value > best[name][0]):
                    best[name] = (value, entry['epoch'])
        return best

    def improved(self, name):
        """Whether the newest epoch set a new best for `name`."""
        best = self.best_epochs().get(name)
        return best is not None and best[1] == self.history[-1]['epoch']

    def selected_on_validation(self):
        """For each val_ metric of `metric_names`: the epoch its best value chose, that value, and the test metrics
        of that epoch ({'on', 'epoch', 'value', 'test'}): model selection on validation data."""
        test_names = self.config.get('evaluation_metrics') or []
        by_epoch = {entry['epoch']: entry for entry in self.history}
        return [{'on': name, 'epoch': epoch, 'value': value,
                 'test': {test: by_epoch[epoch][test] for test in test_names if test in by_epoch[epoch]}}
                for name, (value, epoch) in self.best_epochs().items() if name.startswith('val_')]

    def to_dict(self):
        best = self.best_epochs()
        record = {'config': self.config, 'sessions': self.sessions, 'history': self.history,
                  'best': {name: value for name, (value, _) in best.items()},
                  'best_epoch': {name: epoch for name, (_, epoch) in best.items()}}
        selected = self.selected_on_validation()
        if selected:
            record['selected_on_validation'] = selected
        return record

    @classmethod
    def from_dict(cls, record, metric_names):
        return cls(metric_names, history=record['history'], config=record.get('config'),
                   sessions=record.get('sessions'))

    def save(self, folder):
        """Rewrite summary.json and metrics.csv atomically (stamping the current session's end time)."""
        if self.sessions:
            self.sessions[-1]['ended'] = now()
        atomic_write_json(os.path.join(folder, 'summary.json'), self.to_dict())
        atomic_write_text(os.path.join(folder, 'metrics.csv'), self.csv_text())

    def csv_text(self):
        columns = []
        for entry in self.history:
            columns += [key for key in entry if key not in columns]
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator='\n')
        writer.writeheader()
        writer.writerows({key: json.dumps(value) if isinstance(value, list) else value for key, value in entry.items()}
                         for entry in self.history)  # a list (rho_spectrum@0, the spectrum) as one JSON cell
        return buffer.getvalue()
