"""`flowrun segments [NAME] [--csv]`: each segment's size, or one segment's members."""

from __future__ import annotations

import csv
import io

from sqlalchemy import func, select

from flowrun.config import Config
from flowrun.errors import UsageError
from flowrun.flow.diagnose import suggest
from flowrun.profile.record import from_dict
from flowrun.segments.loader import segments_for
from flowrun.state import codec
from flowrun.state.database import reading
from flowrun.state.schema import profiles, segment_members
from flowrun.state.schema_check import open_current


def segment_lines(config: Config, name: str | None, as_csv: bool, limit: int) -> list[str]:
    defined = {s.name: s for s in segments_for([config.flows])}
    with reading(open_current(config.database)) as conn:
        if name is None:
            query = select(segment_members.c.segment, func.count()).group_by(segment_members.c.segment)
            sizes: dict[str, int] = {str(n): int(c) for n, c in conn.execute(query).all()}
            if as_csv:
                return ["segment,members", *(f"{n},{sizes.get(n, 0)}" for n in sorted(defined))]
            lines = [f"{'SEGMENT':<32} {'MEMBERS':>8}  DESCRIPTION"]
            lines += [f"{n:<32} {sizes.get(n, 0):>8}  {defined[n].description}" for n in sorted(defined)]
            lines += [f"{n:<32} {c:>8}  (no longer defined)" for n, c in sorted(sizes.items()) if n not in defined]
            return lines
        if name not in defined:
            hint = suggest(name, defined) or f"segments: {', '.join(sorted(defined)) or 'none'}"
            raise UsageError(f"no segment {name!r} ({hint})")
        query = (
            select(segment_members.c.customer_key, segment_members.c.since, profiles.c.value)
            .join(profiles, profiles.c.customer_key == segment_members.c.customer_key, isouter=True)
            .where(segment_members.c.segment == name)
            .order_by(segment_members.c.since, segment_members.c.customer_key)
        )
        rows = conn.execute(query if as_csv else query.limit(limit)).all()
    members = []
    for key, since, value in rows:
        profile = from_dict(codec.loads(value)) if value else None
        email = str(profile.customer.get("email") or "") if profile else ""
        spend = ";".join(f"{c} {v}" for c, v in sorted(profile.spend.items())) if profile else ""
        members.append((key, email, codec._aware(since).isoformat(), str(profile.order_count if profile else 0), spend))
    if as_csv:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["customer_key", "email", "member_since", "orders", "spend"])
        writer.writerows(members)
        return out.getvalue().splitlines()
    lines = [f"{name}: {len(members)} member(s) shown", f"{'CUSTOMER':<40} {'SINCE':<26} {'ORDERS':>6}  SPEND"]
    lines += [f"{k:<40} {s[:19]:<26} {o:>6}  {sp}" for k, _, s, o, sp in members]
    return lines
