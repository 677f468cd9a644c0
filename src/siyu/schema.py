"""Every table siyu owns, imported in one place for Alembic and the tests."""

from siyu.benefits import models as benefits_models  # noqa: F401
from siyu.core import audit, auth, idempotency, outbox  # noqa: F401
from siyu.core.db import Base
from siyu.insight import kpi_models  # noqa: F401
from siyu.insight import models as insight_models  # noqa: F401
from siyu.jobs import models as jobs_models  # noqa: F401
from siyu.members import models as members_models  # noqa: F401
from siyu.orders import models as orders_models  # noqa: F401
from siyu.paid import models as paid_models  # noqa: F401
from siyu.points import models as points_models  # noqa: F401
from siyu.programme import models as programme_models  # noqa: F401
from siyu.segments import models as segments_models  # noqa: F401
from siyu.stores import models as stores_models  # noqa: F401
from siyu.tiers import models as tiers_models  # noqa: F401
from siyu.web import models as web_models  # noqa: F401

metadata = Base.metadata
