"""argparse types for the losses' flags: a value out of range is a one-line parse error that names the flag."""
import argparse


def positive_float(text):
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f'must be positive, got {text}')
    return value


def non_negative_float(text):
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f'must be 0 or more, got {text}')
    return value


def positive_int(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f'must be 1 or more, got {text}')
    return value
