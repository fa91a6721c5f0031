"""The training engine: one epoch of training steps (student, PSD teacher, loss, optimizer step), the teacher
snapshot, and the optimizer with its learning-rate schedule."""
