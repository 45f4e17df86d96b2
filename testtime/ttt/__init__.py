"""Batch test-time training (reference-protocol §4.3, §9).

- ``rewards``: rewards, advantages and step metrics (pure);
- ``policy``: the LoRA policy, its loss and its Adam update (torch);
- ``step``: one step of a run (update, save, sample, evaluate, score), one workflow job.

A run's settings are resolved by :mod:`testtime.runs`, which the workflow imports at parse time.
"""
