"""Write docs/spec.md, the group spec's reference, from the typed spec itself (the text
that ``infrakit explain`` prints); tests/test_explain.py fails when the page is stale."""

from pathlib import Path

from infrakit.cli.explain import reference_page

PAGE = Path(__file__).resolve().parent.parent / "docs" / "spec.md"

if __name__ == "__main__":
    PAGE.write_text(reference_page())
    print(f"wrote {PAGE}")
