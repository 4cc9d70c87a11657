"""docs/supported-models.md's table is what the families registry generates."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from accel.families import NOT_REGISTERED, registered_families

ROOT = Path(__file__).resolve().parent.parent


def _script():
    spec = importlib.util.spec_from_file_location("support_table", ROOT / "scripts" / "support_table.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_committed_page_equals_the_generators_output():
    script = _script()
    table = script.support_table()
    page = (ROOT / "docs" / "supported-models.md").read_text()
    assert page == script.page_text(), "docs/supported-models.md out of date: run `python scripts/support_table.py --write`"
    assert script.page_table(page) == table
    for fam in registered_families():
        assert f"| {fam.class_name} |" in table
    assert not set(NOT_REGISTERED) & {f.class_name for f in registered_families()}


def test_every_transformer_class_of_diffusers_is_registered_or_says_why_not():
    import inspect
    import pkgutil

    import diffusers.models.transformers as transformers
    from diffusers.models.modeling_utils import ModelMixin

    classes = set()
    for info in pkgutil.iter_modules(transformers.__path__):
        module = importlib.import_module(f"{transformers.__name__}.{info.name}")
        classes |= {n for n, c in vars(module).items()
                    if inspect.isclass(c) and c.__module__ == module.__name__ and issubclass(c, ModelMixin)}
    registered = {f.class_name for f in registered_families()}
    assert classes == registered | set(NOT_REGISTERED)
