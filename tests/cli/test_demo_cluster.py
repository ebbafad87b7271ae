"""``pushcore demo --cluster``: what it refuses and says before starting anything (the run itself is
tests/cluster/test_chaos.py, which drives the same ClusterRun)."""
from __future__ import annotations

import pytest

from pushcore.cli import demo_cluster, main
from pushcore.cli.demo_cluster import default_plan


def test_a_missing_redis_server_says_how_to_install_it(monkeypatch, capsys):
    monkeypatch.setattr(demo_cluster.shutil, "which", lambda _name: None)
    assert main(["demo", "--cluster", "--duration", "1"]) == 2
    err = capsys.readouterr().err
    assert "redis-server is not installed" in err and "apt-get install redis-server" in err


def test_cluster_runs_its_own_store(capsys):
    assert main(["demo", "--cluster", "--store", "memory"]) == 2
    assert "leave out --store" in capsys.readouterr().err


@pytest.mark.parametrize("flags", [["--nodes", "1"], ["--workers", "0"], ["--kills", "-1"]])
def test_bad_sizes_are_refused(flags, capsys):
    assert main(["demo", "--cluster", *flags]) == 2
    assert "error:" in capsys.readouterr().err


def test_the_plan_interleaves_faults_over_the_nodes():
    plan = default_plan(5, 2, 1, nodes=2)
    assert [k for k, _ in plan] == ["kill", "drain", "kill", "redis", "kill", "drain", "kill", "kill"]
    assert {n for _, n in plan} == {0, 1}
    assert default_plan(0, 0, 0) == []
