"""Helpers of the fine-tune job-flow tests: a stand-in training process and a trainer
process to kill (see tests/test_job_faults.py)."""
