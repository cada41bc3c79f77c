"""Writes benchmark figures into the README's headline table.

Usage: python3 headline.py README.md FILE
FILE holds one figure per line: measure<TAB>figure<TAB>command. Each
replaces the table row whose first cell is that measure (or is added at
the end of the table), dated today, so the table shows what the scripts
last measured rather than what someone copied.
"""

import datetime
import sys

BEGIN = "<!-- headline figures:"
END = "<!-- end of headline figures -->"


def cell(text):
    return text.replace("|", "\\|").strip()


def main(readme, figures):
    lines = open(readme).read().split("\n")
    try:
        start = next(i for i, l in enumerate(lines) if l.startswith(BEGIN))
        end = lines.index(END, start)
    except (StopIteration, ValueError):
        sys.exit(f"{readme} has no headline table ({BEGIN} ... {END})")
    today = datetime.date.today().isoformat()
    for line in open(figures):
        if not line.strip():
            continue
        measure, figure, command = line.rstrip("\n").split("\t")
        row = f"| {cell(measure)} | {cell(figure)} | `{command.strip()}` | {today} |"
        at = next((i for i in range(start, end) if lines[i].startswith(f"| {cell(measure)} |")), None)
        if at is None:
            lines.insert(end, row)
            end += 1
        else:
            lines[at] = row
        print(f"README headline: {measure}: {figure}")
    open(readme, "w").write("\n".join(lines))


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
