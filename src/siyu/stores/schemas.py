from __future__ import annotations

from datetime import date
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class RegionCreate(BaseModel):
    code: str = Field(min_length=1, max_length=50)
    name: str = Field(min_length=1, max_length=100)
    parent_id: int | None = None


class RegionRead(RegionCreate):
    model_config = ConfigDict(from_attributes=True)
    id: int


class StoreCreate(BaseModel):
    code: str = Field(min_length=1, max_length=50)
    name: str = Field(min_length=1, max_length=100)
    region_id: int | None = None
    city: str | None = Field(default=None, max_length=50)
    opened_on: date | None = None


class StoreRead(StoreCreate):
    model_config = ConfigDict(from_attributes=True)
    id: int
    status: str


class StaffCreate(BaseModel):
    code: str = Field(min_length=1, max_length=50, description="employee number")
    name: str = Field(min_length=1, max_length=100)
    role: Literal["guide", "manager"]
    store_id: int | None = None
    phone: str | None = Field(default=None, max_length=20)


class StaffRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    code: str
    name: str
    role: str
    store_id: int | None
    status: str


class StaffStatus(BaseModel):
    status: Literal["active", "left"]
