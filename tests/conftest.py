"""Test-session setup.

- Makes the shared test-data writers in this folder (``idx_files``) importable by every test.
- Without a CUDA device, Triton kernels run in Triton's CPU interpreter: ``TRITON_INTERPRET``
  must be set before any kernel is defined, so it is set here, before collection imports
  the test modules. With a CUDA device the same tests run the compiled kernels.
"""

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
