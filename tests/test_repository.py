"""The repository is self-contained: code, configs, tests and docs cite no document outside it."""

import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
# A specification file that is not part of the repository, cited by section ("SPEC §1") or name.
_OUTSIDE_REFERENCE = re.compile(r"\bSPEC\b|SPEC\.md|/work/shared|\.\./shared")


def _text_files():
    for folder in ("gcc_jax", "configs", "tests", "benchmarks", "docs"):
        for path in sorted((ROOT / folder).rglob("*")):
            if path.suffix in (".py", ".md") and path != pathlib.Path(__file__).resolve():
                yield path
    yield ROOT / "README.md"
    yield ROOT / "train.py"


@pytest.mark.parametrize("path", list(_text_files()), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_reference_to_documents_outside_the_repository(path):
    hits = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if _OUTSIDE_REFERENCE.search(line)
    ]
    assert not hits, "\n".join(hits)


def test_the_losses_document_exists_where_the_code_points():
    assert (ROOT / "docs" / "losses.md").is_file()
