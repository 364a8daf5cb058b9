"""--reachability: is anything still pointing at the outstanding allocations?

The stage runs between the probes' snapshot and aggregation, on the targets of
attach and run, and flows one way:

  Snapshot (allocations) -> scan.inspect -> Snapshot with a ReachScan
                         -> aggregate -> judgement.judge (rows.site_reach, rows.combine) -> Report

  target.py    the only impure part: freezes a process's threads (ptrace),
               reads its registers, maps, pagemap and memory (process_vm_readv)
  regions.py   pure: which mappings are roots, which hold blocks, what to skip
  memory.py    pure: a copy of target memory as segments, read back by address
  classify.py  pure: blocks + memory words -> reachable / unreferenced / indirectly lost
  content.py   pure: the first bytes of blocks as hex + ASCII, and how alike they are
  scan.py      puts the above together for one report
  rows.py      pure: per-row classes, samples, and the verdict that uses them
"""
