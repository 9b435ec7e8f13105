"""piiguard benchmarks: the overhead of field encryption against plaintext and peers.

Run ``python -m benchmarks`` (``--quick`` for a smoke run); see ``benchmarks/README.md``.
"""
