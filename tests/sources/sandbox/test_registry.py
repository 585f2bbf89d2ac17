"""Each registered provider's imitation plugs into the sandbox, and only the sandbox imports it."""

from __future__ import annotations

import json
import os
import pkgutil
import subprocess
import sys
from importlib import import_module
from pathlib import Path

import pytest
from django.urls import Resolver404, resolve

from sources import providers
from sources.sandbox import registry

ROOT = Path(__file__).resolve().parents[3]


def test_every_registered_provider_has_an_imitation_with_routes():
    modules = registry.sandbox_modules()
    assert set(modules) == set(providers.PROVIDERS)
    for provider_id, module in modules.items():
        assert module.urlpatterns, provider_id
        assert registry.sandbox_module_name(providers.PROVIDERS[provider_id]) == module.__name__


def test_every_sandbox_path_a_provider_declares_is_served():
    """The provider's `sandbox_paths` and its imitation's `urlpatterns` name the same routes."""
    for provider in providers.PROVIDERS.values():
        for name, path in provider.sandbox_paths.items():
            url = f"/sandbox{path}"
            try:
                resolve(url)
            except Resolver404:
                # An API root is a prefix of its endpoints: some route must live under it.
                urls = [str(p.pattern) for p in registry.sandbox_module(provider).urlpatterns]
                assert any(u.startswith(path.lstrip("/") + "/") for u in urls), (provider.id, name)


def production_modules(provider_id: str) -> list[str]:
    """Every module of a provider's package except its sandbox (module or package)."""
    package = import_module(providers.PROVIDERS[provider_id].__module__.rsplit(".", 1)[0])
    names = [package.__name__]
    for info in pkgutil.walk_packages(package.__path__, prefix=package.__name__ + "."):
        if info.name.split(".")[3] != "sandbox":
            names.append(info.name)
    return names


PROBE = """
import json, sys
import django
django.setup()
from importlib import import_module
for name in json.loads(sys.argv[1]):
    import_module(name)
print(json.dumps(sorted(m for m in sys.modules if m.startswith("sources.") and ".sandbox" in m)))
"""


@pytest.mark.parametrize("provider_id", list(providers.PROVIDERS))
def test_production_modules_never_import_the_sandbox(provider_id):
    """With DEBUG off (no sandbox mounted), importing every module of the provider's package but
    its sandbox loads no imitation: neither the provider's nor the shared sandbox's views."""
    names = production_modules(provider_id)
    env = {
        **os.environ,
        "DEBUG": "0",
        "DJANGO_SETTINGS_MODULE": "sibling.settings",
        "SECRET_KEY": "x" * 50,
        "SIBLING_PUBLIC_URL": "https://sibling.example",
    }
    done = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(names)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    loaded = set(json.loads(done.stdout.strip().splitlines()[-1]))
    # The sandbox app's models load with every app; nothing else of the sandbox may.
    allowed = {"sources.sandbox", "sources.sandbox.apps", "sources.sandbox.models"}
    assert loaded <= allowed | {m for m in loaded if m.startswith("sources.sandbox.migrations")}
