"""The repository's promises about itself: installs, environments, README and CI stay in step.

Each test names the file that drifted and what to change, so a failure is a to-do item.
"""

import re
import tomllib
import urllib.parse
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent

OPEN_COMMAND = (
    'python3 -m venv .venv && .venv/bin/python -m pip install -e ".[lab]" '
    "&& .venv/bin/python -m kvmmu.lab"
)
TEST_COMMAND = (
    'python3 -m venv .venv && .venv/bin/python -m pip install -e ".[test]" '
    "&& .venv/bin/python -m pytest"
)

# PyPI name -> conda-forge name, where they differ. matplotlib-base is matplotlib without a GUI
# toolkit, which is all the notebooks need and keeps Binder builds small.
CONDA_NAME = {"matplotlib": "matplotlib-base"}

# A requirement's name and the rest of it: "pandas-stubs>=2.2" -> ("pandas-stubs", ">=2.2").
REQUIREMENT = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[[^\]]*\])?\s*(.*?)\s*$")
NOTEBOOK_NAME = re.compile(r"^\d\d_[a-z0-9_]+\.ipynb$")
NOTEBOOK_REF = re.compile(r"notebooks/(\d\d_[a-z0-9_]+\.ipynb)")
FENCED_BLOCK = re.compile(r"^```[^\n]*\n(.*?)^```", re.MULTILINE | re.DOTALL)


def normalize(name: str) -> str:
    """PEP 503 normalization, so `PyYAML`, `pyyaml` and `py_yaml` compare equal."""
    return re.sub(r"[-_.]+", "-", name).lower()


def split_requirement(requirement: str) -> tuple[str, str]:
    match = REQUIREMENT.match(requirement)
    assert match, f"cannot read requirement {requirement!r}"
    return normalize(match.group(1)), match.group(2).replace(" ", "")


def pyproject() -> dict[str, Any]:
    with (ROOT / "pyproject.toml").open("rb") as f:
        return tomllib.load(f)


def environment() -> dict[str, Any]:
    with (ROOT / "environment.yml").open() as f:
        env = yaml.safe_load(f)
    assert isinstance(env, dict), "environment.yml must be a mapping"
    return env


def pyproject_requirements() -> dict[str, str]:
    """Every requirement the project declares (runtime, lab, grading and test), name -> spec."""
    project = pyproject()["project"]
    groups = project["optional-dependencies"]
    assert {"lab", "grading", "test"} <= set(groups), (
        "pyproject.toml must define the lab, grading and test extras"
    )
    requirements: dict[str, str] = {}
    for requirement in [
        *project["dependencies"],
        *groups["lab"],
        *groups["grading"],
        *groups["test"],
    ]:
        name, spec = split_requirement(requirement)
        previous = requirements.setdefault(name, spec)
        assert previous == spec, f"pyproject.toml asks for {name} as both {previous} and {spec}"
    return requirements


def conda_requirements() -> dict[str, str]:
    """The conda packages of environment.yml, name -> specifier (pip section excluded)."""
    requirements = {}
    for dep in environment()["dependencies"]:
        if isinstance(dep, str):
            name, spec = split_requirement(dep)
            requirements[name] = spec
    return requirements


def pip_requirements() -> dict[str, str]:
    """Requirements environment.yml installs with pip (those conda-forge lacks), name -> spec."""
    return dict(split_requirement(line) for line in pip_section() if not line.startswith("-"))


def pip_section() -> list[str]:
    sections = [dep["pip"] for dep in environment()["dependencies"] if isinstance(dep, dict)]
    assert len(sections) == 1, "environment.yml must have exactly one pip section"
    return [str(line) for line in sections[0]]


def readme() -> str:
    return (ROOT / "README.md").read_text(encoding="utf-8")


def readme_code_lines() -> list[str]:
    return [line.strip() for block in FENCED_BLOCK.findall(readme()) for line in block.splitlines()]


def test_pyproject_declares_a_python_311_package_named_kvmmu() -> None:
    project = pyproject()["project"]
    assert project["name"] == "kvmmu"
    assert project["requires-python"] == ">=3.11"


@pytest.mark.parametrize("name", sorted(pyproject_requirements()))
def test_every_pyproject_requirement_is_in_environment_yml(name: str) -> None:
    conda_name = normalize(CONDA_NAME.get(name, name))
    conda = conda_requirements()
    if name in pip_requirements() and conda_name not in conda:
        assert pip_requirements()[name] == pyproject_requirements()[name], (
            f"environment.yml's pip section asks for {name}{pip_requirements()[name]} but "
            f"pyproject.toml for {name}{pyproject_requirements()[name]}: make them agree"
        )
        return
    assert conda_name in conda, f"add `{conda_name}` to environment.yml (pyproject.toml needs it)"
    assert conda[conda_name] == pyproject_requirements()[name], (
        f"environment.yml asks for {conda_name}{conda[conda_name]} but pyproject.toml for "
        f"{name}{pyproject_requirements()[name]}: make the lower bounds agree"
    )


def test_environment_yml_has_nothing_pyproject_lacks() -> None:
    expected = {normalize(CONDA_NAME.get(n, n)) for n in pyproject_requirements()}
    extra = set(conda_requirements()) - expected - {"python", "pip"}
    assert not extra, (
        f"environment.yml has {sorted(extra)} that pyproject.toml lacks: add or drop them"
    )


def test_environment_yml_is_named_kvmmu_on_conda_forge_with_python_311() -> None:
    env = environment()
    assert env["name"] == "kvmmu"
    assert env["channels"] == ["conda-forge"]
    # repo2docker (Binder) reads the Python version only from an exact `python=X.Y` pin.
    assert conda_requirements()["python"] == "=3.11"


def test_environment_yml_installs_kvmmu_itself() -> None:
    assert "pip" in conda_requirements(), "environment.yml needs `pip` for its pip section"
    assert "-e ." in pip_section(), "environment.yml's pip section must install the repo: `-e .`"


def test_package_ships_its_type_marker() -> None:
    assert (ROOT / "kvmmu" / "py.typed").is_file(), "create the empty file kvmmu/py.typed"
    package_data = pyproject()["tool"]["setuptools"]["package-data"]
    assert "py.typed" in package_data["kvmmu"], "list py.typed in [tool.setuptools.package-data]"


def test_pytest_runs_unit_tests_and_every_notebook_strictly() -> None:
    options = pyproject()["tool"]["pytest"]["ini_options"]
    assert options["testpaths"] == ["tests", "notebooks"]
    addopts = options["addopts"]
    assert "--nbval" in addopts and "--nbval-lax" not in addopts, "notebooks are checked strictly"
    assert "--nbval-current-env" in addopts
    sanitize = addopts[addopts.index("--nbval-sanitize-with") + 1]
    assert (ROOT / sanitize).is_file(), f"{sanitize} is named in addopts but missing"


def test_notebooks_are_named_nn_topic() -> None:
    bad = [p.name for p in (ROOT / "notebooks").glob("*.ipynb") if not NOTEBOOK_NAME.match(p.name)]
    assert not bad, f"rename {bad} to NN_topic.ipynb (two digits, lower-case words)"


def test_readme_lists_every_notebook_in_numeric_order() -> None:
    on_disk = sorted(p.name for p in (ROOT / "notebooks").glob("*.ipynb"))
    assert on_disk, "the suite has no notebooks"
    listed = list(dict.fromkeys(NOTEBOOK_REF.findall(readme())))
    assert listed == on_disk, (
        f"README.md mentions notebooks {listed}; notebooks/ holds {on_disk}: "
        "list every notebook once, in order, and none that does not exist"
    )


@pytest.mark.parametrize("command", [OPEN_COMMAND, TEST_COMMAND], ids=["open", "test"])
def test_readme_shows_each_command_on_one_line_in_a_code_block(command: str) -> None:
    assert command in readme_code_lines(), f"README.md must show, on one line:\n{command}"


def test_ci_runs_the_readme_test_command() -> None:
    script = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert "set -euo pipefail" in script
    lines = [line.strip() for line in script.splitlines()]
    assert TEST_COMMAND in lines, "`.ci/run` must run the README's test command, verbatim"


# conda-forge names of two more PyPI packages: nbconvert-core is nbconvert without pandoc (the
# HTML export needs none), and the Playwright for Python package is playwright-python there.
CONDA_NAME["nbconvert"] = "nbconvert-core"
CONDA_NAME["playwright"] = "playwright-python"


LINK_DEFINITION = re.compile(r"^\[(binder|hub)\]: (\S+)$", re.MULTILINE)


def readme_links() -> dict[str, str]:
    links = dict(LINK_DEFINITION.findall(readme()))
    assert set(links) == {"binder", "hub"}, "README.md must define the [binder] and [hub] links"
    return links


def test_binder_badge_launches_the_welcome_lesson() -> None:
    assert "[![Binder](https://mybinder.org/badge_logo.svg)][binder]" in readme()
    url = urllib.parse.urlsplit(readme_links()["binder"])
    assert url.scheme == "https" and url.path.startswith("/v2/gh/")
    owner, repo, branch = url.path.removeprefix("/v2/gh/").split("/")
    assert owner and repo and branch
    (target,) = urllib.parse.parse_qs(url.query)["urlpath"]
    assert target.startswith("lab/tree/") and (ROOT / target.removeprefix("lab/tree/")).is_file()


def test_course_hub_link_pulls_the_repository_and_opens_a_lesson() -> None:
    url = urllib.parse.urlsplit(readme_links()["hub"])
    assert url.scheme == "https" and url.path == "/hub/user-redirect/git-pull"
    query = urllib.parse.parse_qs(url.query)
    (repo,) = query["repo"]
    assert urllib.parse.urlsplit(repo).scheme == "https", "repo must be the clone URL, encoded"
    (target,) = query["urlpath"]
    # nbgitpuller clones into a folder named after the repository, inside the user's home.
    folder = urllib.parse.urlsplit(repo).path.rstrip("/").rsplit("/", 1)[-1].removesuffix(".git")
    prefix = f"lab/tree/{folder}/"
    assert target.startswith(prefix), f"urlpath must open a notebook under {prefix}"
    assert (ROOT / target.removeprefix(prefix)).is_file(), f"{target} names no notebook"
    binder_repo = urllib.parse.urlsplit(readme_links()["binder"]).path.split("/")[4]
    assert folder == binder_repo, "the [binder] and [hub] lines name different repositories"
