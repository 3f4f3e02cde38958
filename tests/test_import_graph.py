"""The package's imports run one way: losses <- models <- data <- runtime <- training, and
runtime <- inference <- predict / evaluate (which import nothing of training); nothing imports a
command-line module, and models know no losses.

Read from the source (every ``import`` statement, including those inside functions), so the
test needs no import of the package and sees imports that only run on some paths.
"""

import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "gcc_jax"

# Each top-level part of the package may import only from its own layer and the layers before.
LAYERS = (
    # gcc_jax.cli (how every command reports an error) imports nothing of the package; the
    # data builder's command and every later command line use it.
    ("gcc_jax.losses", "gcc_jax.cli"),
    ("gcc_jax.imagenet", "gcc_jax.metrics"),
    ("gcc_jax.models", "gcc_jax.localization"),
    ("gcc_jax.data", "gcc_jax.localization_scoring", "gcc_jax.localization_pictures", "gcc_jax.image_results"),
    ("gcc_jax.runtime",),
    ("gcc_jax.training",),
    ("gcc_jax.inference",),
    ("gcc_jax.predict", "gcc_jax.evaluate", "gcc_jax.convert_weights", "gcc_jax.export"),
)
_LAYER = {part: rank for rank, parts in enumerate(LAYERS) for part in parts}
# Modules that are only command lines: the library never imports them.
COMMAND_LINES = ("gcc_jax.evaluate", "gcc_jax.convert_weights", "gcc_jax.predict.__main__", "gcc_jax.models.__main__",
                 "gcc_jax.export.__main__")


def _module_name(path: pathlib.Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def _imports(path: pathlib.Path) -> set[str]:
    """The gcc_jax modules ``path`` imports (``from gcc_jax.x import y`` counts ``gcc_jax.x.y``
    when that is a module, else ``gcc_jax.x``)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("gcc_jax"))
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("gcc_jax"):
            for alias in node.names:
                submodule = f"{node.module}.{alias.name}"
                found.add(submodule if submodule in MODULES else node.module)
    return found


def _part(module: str) -> str:
    return ".".join(module.split(".")[:2])


def test_every_part_of_the_package_has_a_layer():
    assert {_part(name) for name in MODULES} - {"gcc_jax"} == set(_LAYER)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_point_down_the_layers(module):
    if module == "gcc_jax":
        assert not _imports(MODULES[module])
        return
    rank = _LAYER[_part(module)]
    upward = sorted(m for m in _imports(MODULES[module]) if _LAYER.get(_part(m), 0) > rank)
    assert not upward, f"{module} imports {upward}, which sit above it"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_nothing_imports_a_command_line_module(module):
    assert not _imports(MODULES[module]) & set(COMMAND_LINES), module


# What runs a trained model reaches configs, checkpoints, the mesh and the prediction step
# through gcc_jax.runtime, never through the training program.
WITHOUT_TRAINING = ("gcc_jax.inference", "gcc_jax.predict", "gcc_jax.evaluate", "gcc_jax.runtime")


@pytest.mark.parametrize("module", sorted(m for m in MODULES if _part(m) in WITHOUT_TRAINING))
def test_running_a_model_imports_nothing_of_training(module):
    training = sorted(m for m in _imports(MODULES[module]) if _part(m) == "gcc_jax.training")
    assert not training, f"{module} imports {training}"


def test_no_sideways_arrows_from_predict_and_models():
    for module, path in MODULES.items():
        imported = _imports(path)
        if module.startswith("gcc_jax.predict"):
            assert "gcc_jax.training.loop" not in imported, module
        if module.startswith("gcc_jax.models"):
            assert not {m for m in imported if _part(m) == "gcc_jax.losses"}, module
