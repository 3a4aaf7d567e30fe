"""The README and docs/ say what is true: counts that other files hold, and links that exist."""

from __future__ import annotations

import re

from tests.bad_inputs import BAD_INPUTS
from tests.conftest import REPO

PAGES = [REPO / "README.md", REPO / "CONTRIBUTING.md", *sorted((REPO / "docs").glob("*.md"))]


def test_the_readme_counts_the_bad_inputs_that_are_tested_and_documented():
    said = int(re.search(r"lists (\d+) bad inputs", (REPO / "README.md").read_text()).group(1))
    documented = len(re.findall(r"^\| \d+ \| \[", (REPO / "docs" / "reliability.md").read_text(), flags=re.M))
    assert said == documented == len(BAD_INPUTS)


def test_local_links_lead_somewhere():
    missing = []
    for page in PAGES:
        for target in re.findall(r"\]\(([^)#]+?)(?:#[^)]*)?\)", page.read_text()):
            if "://" in target:
                continue
            if not (page.parent / target).exists():
                missing.append(f"{page.relative_to(REPO)} -> {target}")
    assert not missing
