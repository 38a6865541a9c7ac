"""mergelab's Hydra entry points, run logging and reports.

Importing the package sets the environment of :data:`BLAS_ENVIRONMENT` where it is unset,
before numpy and scipy load OpenBLAS (it reads it once, at load; ``python -m experiments.*``
imports this first). OpenBLAS's idle worker threads spin for about 2^28 cycles after each
call by default (``OPENBLAS_THREAD_TIMEOUT``, a power of two); between the many short
BLAS and LAPACK calls of the spectral merges that spinning made two threads slower than
one on the 2-core VM (one ViT-B/32 block of 20 tasks: TSV-M 8.3 s on two threads, 5.35 s
on one; Iso-C slower than the full-SVD code it replaced), and with 2^4 cycles two threads
are faster than one (TSV-M 4.65 s, Iso-C 0.47 against 0.58 s, Iso-CTS 3.33 against
4.21 s; ``results/performance.md``). Nothing else in mergelab computes through OpenBLAS
threads.
"""

import os

BLAS_ENVIRONMENT = {"OPENBLAS_THREAD_TIMEOUT": "4"}
for _name, _value in BLAS_ENVIRONMENT.items():
    os.environ.setdefault(_name, _value)
