"""noclash: chat backends where a duplicate key is never a 500.

The importable surface is small on purpose: the uniqueness primitives live in
:mod:`noclash.unique`, the doctor in :mod:`noclash.doctor`; everything else is the
application and private.
"""

__version__ = "0.1.0"
