"""Build ``changelogs.parquet``: dated Debian changelog entries of the packages installed here.

Every installed Debian package ships ``/usr/share/doc/PKG/changelog.Debian.gz``; each entry
ends with a trailer line `` -- Name <email>  Date`` that dates it. One user per *source*
package (binary packages of one source share the changelog, and would leak across folds),
each entry a post (its text: the entry's change lines, at most 400 characters), at most the
latest 30 entries, sources with at least 3 dated entries. Per-user labels from
``/var/lib/dpkg/status``: ``kind`` = library (Section libs/libdevel/oldlibs) or not,
``team`` = maintained by a team or list (Maintainer names a Team, Maintainers, Group or a
lists. address) or by a person. The snapshot is shipped so the set is the same on every
machine. Run with the system Python or the venv::

    python benchmarks/data/debian/build.py
"""

from __future__ import annotations

import gzip
import re
import sys
from email.utils import parsedate_to_datetime
from pathlib import Path

import pandas as pd

OUT = Path(__file__).with_name("changelogs.parquet")
HEAD = re.compile(r"^(\S+) \(([^)]+)\) ")
TRAILER = re.compile(r"^ -- (.+?) <([^>]*)>\s+(.+)$")
LIB_SECTIONS = {"libs", "libdevel", "oldlibs"}
TEAM = re.compile(r"team|maintainers|group|lists\.", re.I)


def dpkg_status(path: Path = Path("/var/lib/dpkg/status")) -> dict[str, dict[str, str]]:
    pkgs: dict[str, dict[str, str]] = {}
    for block in path.read_text(encoding="utf-8", errors="replace").split("\n\n"):
        fields = dict(re.findall(r"^([A-Za-z-]+): (.*)$", block, flags=re.M))
        if "Package" in fields:
            pkgs[fields["Package"]] = fields
    return pkgs


def entries(path: Path) -> tuple[str | None, list[tuple[pd.Timestamp, str]]]:
    source, out, body = None, [], []
    with gzip.open(path, "rt", encoding="utf-8", errors="replace") as fh:
        for line in fh:
            line = line.rstrip("\n")
            m = HEAD.match(line)
            if m:
                source = source or m.group(1)
                body = []
                continue
            t = TRAILER.match(line)
            if t:
                try:
                    when = pd.Timestamp(parsedate_to_datetime(t.group(3).strip())).tz_convert("UTC").tz_localize(None)
                except (TypeError, ValueError, IndexError, OverflowError):
                    body = []
                    continue
                text = " ".join(s.strip().lstrip("*-+ ").strip() for s in body if s.strip())
                if text:
                    out.append((when, text[:400]))
                body = []
                continue
            body.append(line)
    return source, out


def main() -> int:
    status = dpkg_status()
    seen: set[str] = set()
    rows = []
    for doc in sorted(Path("/usr/share/doc").iterdir()):
        cl = doc / "changelog.Debian.gz"
        if doc.is_symlink() or not cl.is_file() or doc.name not in status:
            continue
        source, ents = entries(cl)
        if not source or source in seen or len(ents) < 3:
            continue
        seen.add(source)
        st = status[doc.name]
        kind = int(st.get("Section", "").split("/")[-1] in LIB_SECTIONS)
        team = int(bool(TEAM.search(st.get("Maintainer", ""))))
        ents = sorted(ents)[-30:]
        for when, text in ents:
            rows.append({"user_id": source, "timestamp": when, "text": text, "package": doc.name,
                         "section": st.get("Section", ""), "kind": kind, "team": team})
    df = pd.DataFrame(rows).sort_values(["user_id", "timestamp"], kind="stable").reset_index(drop=True)
    df.to_parquet(OUT, index=False)
    users = df.drop_duplicates("user_id")
    print(f"{len(users)} sources, {len(df)} entries; kind=library {users.kind.sum()}, team-maintained {users.team.sum()}"
          f" -> {OUT}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
