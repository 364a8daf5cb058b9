"""What every stage uses: errors, settings, the data model, units, caches,
the terminal, timing, output files, privileges and stop signals.
"""
