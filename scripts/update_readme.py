"""Regenerate the settings table in README.md from the hub's config registry."""

from __future__ import annotations

import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hub.config import describe

README = Path(__file__).resolve().parent.parent / "README.md"


def main() -> None:
    text = README.read_text()
    table = describe()
    new = re.sub(r"(<!-- config-table:start -->\n).*?(<!-- config-table:end -->)",
                 lambda m: m.group(1) + table + "\n" + m.group(2), text, flags=re.S)
    README.write_text(new)


if __name__ == "__main__":
    main()
