"""Downstream evaluation of MUSER checkpoints: probe, zero-shot, fine-tune (PT+FT) and retrieval protocols
with random-weights and MFCC baselines; `muser.eval.runner.run_eval(cfg)` is the entry point used by
`muser eval`.
"""
