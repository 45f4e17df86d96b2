"""The policy-gradient library shared by the training loops: RLVR (reference-protocol §8) and
batch test-time training (§9).

- ``rewards``: normalised rewards, advantages (global or group z-score, group mean-centring) and
  step metrics (pure);
- ``policy``: the LoRA policy, the ``importance_sampling`` loss and its Adam update (torch);
- ``rollouts``: one step of a loop (update on the previous step's rollouts, save, sample,
  evaluate, score), called by :mod:`testtime.ttt.step` and :mod:`testtime.rlvr`.

Each loop is one workflow job per step; the files of step s are the inputs of step s+1.
"""
