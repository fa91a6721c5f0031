"""The PSD teacher: a frozen in-memory snapshot of the student, refreshed at the end of every epoch."""
import copy

import torch


def make_teacher(student):
    """A copy of `student` in eval mode whose parameters take no gradient."""
    teacher = copy.deepcopy(student)
    teacher.eval()
    for parameter in teacher.parameters():
        parameter.requires_grad_(False)
    return teacher


@torch.no_grad()
def refresh_teacher(teacher, student):
    """Copy the student's current weights and buffers into the teacher, in place."""
    teacher.load_state_dict(student.state_dict())
    teacher.eval()
