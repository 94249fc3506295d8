"""The helpline's records, one module per area; everything is importable from `helpline.models`.

An area adds its models in its own module here and one import line below, so that Alembic sees
every table.
"""

from .core import *  # noqa: F401,F403
from .core import Base, utcnow  # noqa: F401
from .routing import *  # noqa: F401,F403
from .booking import *  # noqa: F401,F403
from .audit import *  # noqa: F401,F403
from .supervision import *  # noqa: F401,F403
from .access import *  # noqa: F401,F403
from .questionnaire import *  # noqa: F401,F403
from .public import *  # noqa: F401,F403
from .display import *  # noqa: F401,F403
