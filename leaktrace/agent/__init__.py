"""`leaktrace agent`: watch every process and slab cache, trace only what grows.

Stages, one module each, data flowing one way:
  watch.py      pure: /proc samples -> one series per process, cgroup, slab
                cache and total, judged by the shared growth model (judge/trend.py)
  policy.py     pure: which suspect to trace next (one at a time, cool-down
                per target, harder sampling after a budget stop)
  budget.py     pure: the probes' measured CPU cost against --budget
  escalate.py   the only door to the tracing machinery: a time-boxed
                attach or kernel trace through UserProbe/KernelProbe + Session
  findings.py   pure: a trace's final report -> top sites and an event line
  evidence.py   --out DIR: recordings, pprof, verdicts, events, retention
  exporter.py   /metrics (prometheus_client) from an immutable AgentState
  sampler.py    the sampling schedule, on its own thread: no trace holds it up
  loop.py       the loop that joins them
"""
