"""The static import walk: what the run imports, what it never does, and bad input that must not stop it."""

from __future__ import annotations

from pathlib import Path

from wanrepo import FoundingStory, write_files

from wandoc.code.imports import walk_imports, walk_source
from wandoc.code.parse import parse_text
from wandoc.code.probe import probe_repo
from wandoc.code.source import FsSource


def test_founding_story_path(story: FoundingStory) -> None:
    path = walk_imports(story.checkout)
    assert path.entry == "generate.py"
    for rel in ("wan/__init__.py", "wan/modules/__init__.py", "wan/modules/model.py", "wan/modules/attention.py"):
        assert rel in path.modules
    assert "wan/configs/__init__.py" in path.modules  # ``from . import configs``: a submodule named in a from-import
    assert path.unimported == ["diag_gpu.py", "wan/modules/attention_main_backup.py"]
    assert path.conditional == ["wan/utils/prompt_extend.py"]  # imported inside a function only
    assert path.third_party == ["flash_attn", "torch"]  # stdlib left out; the try/except import counts
    assert path.errors == [] and path.unresolved == []


def test_package_chain_and_relative_levels(tmp_path: Path) -> None:
    write_files(
        tmp_path,
        {
            "main.py": "import pkg.sub.leaf\n",
            "pkg/__init__.py": "",
            "pkg/sub/__init__.py": "from ..util import helper\n",
            "pkg/sub/leaf.py": "from . import sibling\nfrom .. import util\n",
            "pkg/sub/sibling.py": "",
            "pkg/util.py": "def helper(): pass\n",
            "pkg/unused.py": "",
        },
    )
    path = walk_imports(tmp_path, "main.py")
    assert path.modules == [
        "main.py", "pkg/__init__.py", "pkg/sub/__init__.py", "pkg/sub/leaf.py", "pkg/sub/sibling.py", "pkg/util.py",
    ]  # fmt: skip
    assert path.unimported == ["pkg/unused.py"]


def test_dynamic_imports(tmp_path: Path) -> None:
    write_files(
        tmp_path,
        {
            "generate.py": (
                "import importlib\n"
                "mod = importlib.import_module('plugins.fast')\n"
                "other = __import__('plugins.other')\n"
                "def load(name):\n"
                "    return importlib.import_module(name)\n"
                "rel = importlib.import_module('.rel', package='plugins')\n"
            ),
            "plugins/__init__.py": "",
            "plugins/fast.py": "",
            "plugins/other.py": "",
            "plugins/rel.py": "",
        },
    )
    path = walk_imports(tmp_path)
    assert {"plugins/fast.py", "plugins/other.py", "plugins/__init__.py"} <= set(path.modules)
    assert path.unresolved == ["generate.py:5 import_module(name)"]


def test_sys_path_tricks(tmp_path: Path) -> None:
    write_files(
        tmp_path,
        {
            "generate.py": (
                "import os, sys\n"
                "ROOT = os.path.dirname(os.path.abspath(__file__))\n"
                "sys.path.insert(0, os.path.join(ROOT, 'third_party'))\n"
                "sys.path.append('libs')\n"
                "import vendored\n"
                "import plain_lib\n"
            ),
            "third_party/vendored.py": "from pathlib import Path\nimport sys\n"
            "sys.path.append(str(Path(__file__).resolve().parent.parent / 'more'))\nimport deeper\n",
            "libs/plain_lib.py": "",
            "more/deeper.py": "",
        },
    )
    path = walk_imports(tmp_path)
    assert {"third_party/vendored.py", "libs/plain_lib.py", "more/deeper.py"} <= set(path.modules)
    assert path.third_party == []


def test_entry_dir_is_on_sys_path(tmp_path: Path) -> None:
    write_files(tmp_path, {"scripts/run.py": "import helper\n", "scripts/helper.py": "", "helper_unused.py": ""})
    path = walk_imports(tmp_path, "scripts/run.py")
    assert path.modules == ["scripts/helper.py", "scripts/run.py"]


def test_function_imports_are_conditional_transitively(tmp_path: Path) -> None:
    write_files(
        tmp_path,
        {
            "generate.py": "import a\ndef later():\n    import b\n",
            "a.py": "",
            "b.py": "import c\n",
            "c.py": "import a\n",
        },
    )
    path = walk_imports(tmp_path)
    assert path.modules == ["a.py", "b.py", "c.py", "generate.py"]
    assert path.conditional == ["b.py", "c.py"]


def test_type_checking_and_main_guard_are_not_followed(tmp_path: Path) -> None:
    write_files(
        tmp_path,
        {
            "generate.py": "from typing import TYPE_CHECKING\nimport lib\nif TYPE_CHECKING:\n    import typing_only\n"
            "if __name__ == '__main__':\n    import main_only\n",
            "lib.py": "if __name__ == '__main__':\n    import lib_demo\n",
            "typing_only.py": "",
            "main_only.py": "",
            "lib_demo.py": "",
        },
    )
    path = walk_imports(tmp_path)
    assert path.modules == ["generate.py", "lib.py", "main_only.py"]  # the entry's own main block does run


def test_syntax_error_is_a_fact_and_the_walk_goes_on(tmp_path: Path) -> None:
    write_files(
        tmp_path,
        {
            "generate.py": "import broken\nimport fine\n",
            "broken.py": "import os\n\ndef oops(:\n    pass\n",
            "fine.py": "import deeper\n",
            "deeper.py": "",
        },
    )
    path = probe_repo(tmp_path, environ={}).import_path  # the walk reads imports; the probe parses what it judges
    assert "deeper.py" in path.modules
    assert len(path.errors) == 1
    assert path.errors[0].startswith("broken.py:3 SyntaxError:")
    assert path.errors_on_path == ["broken.py:3 SyntaxError: invalid syntax: `def oops(:`"]


def test_import_cycle(tmp_path: Path) -> None:
    write_files(tmp_path, {"generate.py": "import a\n", "a.py": "import b\n", "b.py": "import a\nfrom . import x\n"})
    path = walk_imports(tmp_path)
    assert path.modules == ["a.py", "b.py", "generate.py"]


def test_missing_local_module_is_unresolved(tmp_path: Path) -> None:
    write_files(tmp_path, {"generate.py": "import pkg.gone\nfrom .nothing import x\n", "pkg/__init__.py": ""})
    path = walk_imports(tmp_path)
    assert "generate.py:1 pkg.gone (not found in the checkout)" in path.unresolved
    assert "pkg/__init__.py" in path.modules


def test_missing_entry_and_empty_folder(tmp_path: Path) -> None:
    write_files(tmp_path, {"wan/model.py": ""})
    path = walk_imports(tmp_path)
    assert path.errors == ["generate.py: entry script not found"]
    assert path.modules == [] and path.unimported == ["wan/model.py"]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert walk_imports(empty).unimported == []


def test_environments_and_caches_are_not_checkout_files(tmp_path: Path) -> None:
    write_files(
        tmp_path,
        {
            "generate.py": "",
            ".venv/lib/site-packages/torch/__init__.py": "",
            "venv2/pyvenv.cfg": "home = /usr/bin\n",
            "venv2/lib/x.py": "",
            "node_modules/pkg/setup.py": "",
            "__pycache__/generate.py": "",
            "python_embeded/python311._pth": "",
            "python_embeded/Lib/os.py": "",
            "tools/helper.py": "",
        },
    )
    assert walk_imports(tmp_path).unimported == ["tools/helper.py"]


def test_non_utf8_source_with_a_coding_cookie(tmp_path: Path) -> None:
    (tmp_path / "generate.py").write_bytes("# -*- coding: latin-1 -*-\nimport lib\nNAME = 'café'\n".encode("latin-1"))
    (tmp_path / "lib.py").write_text("", encoding="utf-8")
    assert walk_imports(tmp_path).modules == ["generate.py", "lib.py"]


def test_parse_cache_is_by_content(tmp_path: Path) -> None:
    text = "import os\nx = 1\n"
    assert parse_text(text) is parse_text(str(text))
    assert parse_text(text) is not parse_text(text + "\n")


def test_walk_exposes_bindings_for_call_following(story: FoundingStory) -> None:
    walk = walk_source(FsSource(story.checkout))
    assert walk.bindings("wan/modules/model.py")["attention"] == ("wan/modules/attention.py", "attention")
    assert walk.bindings("wan/__init__.py")["modules"] == ("wan/modules/__init__.py", None)
