"""The documentation site builds with warnings as errors (``mkdocs build --strict``,
mkdocstrings included) into a temporary folder, and has what a user needs: a page per
topic, each protocol with its figure and its parameter table, the API pages; the
README's links into docs/ resolve."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
NEEDED = ("mkdocs", "mkdocstrings", "mkdocstrings_handlers.python")


def _missing() -> list[str]:
    out = []
    for name in NEEDED:
        try:
            if importlib.util.find_spec(name) is None:
                out.append(name)
        except ModuleNotFoundError:
            out.append(name)
    return out


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The site, built once for this module (strict: any warning fails the build)."""
    if missing := _missing():
        pytest.skip(f"{', '.join(missing)} not installed (pip install -e '.[docs]')")
    out = tmp_path_factory.mktemp("site")
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    took = time.perf_counter() - start
    assert proc.returncode == 0, f"mkdocs build --strict failed:\n{proc.stdout}\n{proc.stderr}"
    print(f"mkdocs build --strict: {took:.1f} s")
    return out


def text_of(site: Path, page: str) -> str:
    html = (site / page / "index.html").read_text(encoding="utf-8")
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


def test_the_site_builds_strict_with_every_page(site: Path) -> None:
    for page in ("getting-started", "device", "design", "bench-file", "protocols", "operators", "store",
                 "codebook-format", "campaigns", "api", "api/bench", "api/runner", "api/protocols",
                 "api/parameters", "api/store", "api/codebooks", "api/campaign", "api/probers", "api/sim"):
        assert (site / page / "index.html").is_file(), page
    assert (site / "index.html").is_file()
    assert not (site / "hooks.py").exists() and not (site / "make_figures.sh").exists()


def test_each_protocol_has_its_figure_and_parameter_table(site: Path) -> None:
    """Every characterization and programming protocol shows its figure; every
    registered protocol's parameters appear in a table made from its dataclass."""
    from labpcu.protocols.registry import protocols

    html = (site / "protocols" / "index.html").read_text(encoding="utf-8")
    for name in ("iv_sweep", "hysteresis", "ispp", "binary_switch", "configure", "retention", "weight_statistics"):
        assert f'src="../figures/{name}.png"' in html, name
        assert (site / "figures" / f"{name}.png").is_file()
    tables = text_of(site, "api/parameters")
    for name, proto in protocols().items():
        if not proto.__module__.startswith("labpcu."):  # one a test or a plug-in registered
            continue
        for spec in proto.Params.specs():
            assert f"--{spec.name.replace('_', '-')}" in tables, (name, spec.name)
    assert "v_start (float) --v-start V 10 mV … 20 V 200 mV first pulse magnitude" in tables
    assert "<!-- parameters:" not in (site / "operators" / "index.html").read_text(encoding="utf-8")


def test_the_api_pages_come_from_the_docstrings(site: Path) -> None:
    bench = text_of(site, "api/bench")
    assert "Bench" in bench and "from_file" in bench and "safe_state" in bench
    assert "Runner" in text_of(site, "api/runner") and "Store" in text_of(site, "api/store")
    assert "CampaignEngine" in text_of(site, "api/campaign")


def test_an_unknown_protocol_in_a_parameter_marker_fails_the_build() -> None:
    sys.path.insert(0, str(DOCS))
    try:
        import hooks  # docs/hooks.py
    finally:
        sys.path.remove(str(DOCS))
    assert "| `stop` (float) | `--stop` | V |" in hooks.on_page_markdown("<!-- parameters: iv_sweep -->", None, None, None)
    with pytest.raises(Exception, match="nope"):
        hooks.parameter_table("nope")


def test_the_readme_links_into_docs_resolve() -> None:
    """Every docs/ file the README links to exists, and the README points to the pages
    that replace the references it used to cite (device, design, codebook format)."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    targets = set(re.findall(r"\]\((docs/[^)#\s]+)", readme))
    assert {"docs/device.md", "docs/design.md", "docs/codebook-format.md"} <= targets
    for target in targets:
        assert (ROOT / target).exists(), target
    assert not re.search(r"(?<![\w/-])(pcu|codebook|DESIGN)\.md", readme), "a citation of a file not shipped"
