"""Money is integer fen (分) inside siyu; ``Decimal`` yuan only at the edges. Never float."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

from siyu.core.errors import InvalidInput

FEN_PER_YUAN = 100
# An amount above this in one field is a typo or an attack, not a retail order.
MAX_FEN = 10_000_000 * FEN_PER_YUAN


def yuan_to_fen(value: Decimal | str | int, *, field: str = "amount") -> int:
    """Parse yuan ('12.5', Decimal('12.50'), 12) to exact fen; reject fractions of a fen."""
    if isinstance(value, float):  # pragma: no cover - guarded by types, kept as a last line
        raise InvalidInput(
            f"{field}: floats are not money; send a string like '12.50'", field=field
        )
    try:
        amount = Decimal(str(value).strip())
    except (InvalidOperation, ValueError):
        raise InvalidInput(
            f"{field}: '{value}' is not an amount in yuan; use digits like 12.50", field=field
        ) from None
    if not amount.is_finite():
        raise InvalidInput(f"{field}: '{value}' is not a finite amount", field=field)
    fen = amount * FEN_PER_YUAN
    if fen != fen.to_integral_value():
        raise InvalidInput(
            f"{field}: '{value}' has more than two decimals; amounts are in yuan to the fen",
            field=field,
        )
    return int(fen)


def fen_to_yuan(fen: int) -> Decimal:
    return (Decimal(fen) / FEN_PER_YUAN).quantize(Decimal("0.01"))


def format_yuan(fen: int) -> str:
    """'¥1,234.50' for display; negative as '-¥3.00'."""
    sign = "-" if fen < 0 else ""
    return f"{sign}¥{fen_to_yuan(abs(fen)):,}"
