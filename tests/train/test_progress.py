"""The console's progress line: every loss term, rates, and the teacher's TFLOP/s only when there is one."""

from miniend_jax.train.metrics import Progress


def test_progress_line_names_each_term_and_the_teacher_only_when_present():
    progress = Progress(total_steps=100, start_step=0)
    metrics = {"loss": 2.5, "loss/ground_truth": 2.5, "learning_rate": 1e-3, "tokens_per_second": 4096.0,
               "student_tflops": 0.25}
    alone = progress.line(10, {**metrics, "teacher_tflops": 0.0})  # pretrain and finetune: no teacher
    assert alone.startswith("step 10/100 | loss 2.5000 (ground_truth 2.5000) | lr 1.00e-03 | 4.1k tok/s | ")
    assert "student 0.250 TFLOP/s |" in alone and "teacher" not in alone
    distilling = progress.line(10, {**metrics, "teacher_tflops": 1.5})
    assert "student 0.250 TFLOP/s teacher 1.500 |" in distilling
