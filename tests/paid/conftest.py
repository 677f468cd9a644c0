"""Fixtures for paid membership tests, built through the services users call."""

from __future__ import annotations

import pytest
from sqlalchemy.orm import Session

from siyu.members import service as members
from siyu.members.service import EnrolDraft


@pytest.fixture
def member_id(session: Session, programme_in_force: None) -> int:
    return members.enrol(session, EnrolDraft(phone="13800138000")).member_id
