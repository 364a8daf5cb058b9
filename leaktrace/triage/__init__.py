"""`leaktrace triage`: is this machine leaking, what kind of memory, what to run next.

Stages, one module each, data flowing one way:
  sampling.py  reads /proc (or a saved copy) into procfs.Capture
  verdicts.py  pure: Capture -> Triage (verdicts, top growers, next commands)
  oom.py       reads the OOM-related settings and assesses them (pure part apart)
  render.py    Triage + OOM checks -> plain data -> table or JSON
No BPF is involved; without root, slab and vmalloc detail are reported missing.
"""
from leaktrace.triage.oom import assess, read_oom_settings
from leaktrace.triage.render import RENDERERS, to_data
from leaktrace.triage.sampling import read_capture, sample_window
from leaktrace.triage.verdicts import triage

__all__ = ["assess", "read_oom_settings", "RENDERERS", "to_data", "read_capture",
           "sample_window", "triage"]
