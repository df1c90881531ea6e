"""The package's exception types, in one place: ``from encodec_hf.errors import EcdcFormatError``.

They are defined in ``codec/errors.py`` so that the self-contained ``codec`` package (copied into Hub repos for
``trust_remote_code``) carries them; this module is the import path for users and for the rest of the package.
"""

from .codec.errors import *  # noqa: F403
from .codec.errors import __all__  # noqa: F401
