"""``make demo``'s ``graduate-to-oidc`` scenario (issue 15), run on its own in the test world: a user with a
GitHub and a GitLab target graduates through the real graduation state machine; at the end it holds zero keys,
both CIs build through OIDC with no key variable, and a token of another repository is refused by the role's
trust. Also: the demo's leak scan finds ID tokens and session credentials, and the page draws the graduation
on its own graph.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from local import demo
from local.demo_timeline import all_states
from local.world import World, split, target_id
from tests.conftest import new_user_name


@pytest.fixture(scope="module")
def graduated(world: World, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[dict[str, Any], Path]]:
    out = tmp_path_factory.mktemp("demo")
    user = new_user_name("demograd")
    projects = (f"acme/{user}", f"gitlab:acme/{user}")
    yield demo.run_graduation_scenario(world, out, user=user, projects=projects), out


def test_the_user_ends_with_zero_keys_and_both_cis_build_through_oidc(
        graduated: tuple[dict[str, Any], Path], world: World) -> None:
    result, _ = graduated
    user = result["user"]
    tids = [t["id"] for t in result["targets"]]
    assert [t["provider"] for t in result["targets"]] == ["github", "gitlab"]
    assert result["status"] == "SUCCEEDED"
    assert [(e["target_id"], e["status"]) for e in result["executions"]] == [(t, "SUCCEEDED") for t in tids]
    # Only the last graduation retires the key: the recovery window, then the deletion.
    first, last = (e["states"] for e in result["executions"])
    assert "GraduateRetireKey" not in first and first[-1] == "GraduateSucceeded"
    assert ["GraduateRetireKey", "RecoveryWindow", "DeleteOldKey"] == [s for s in last if s in (
        "GraduateRetireKey", "RecoveryWindow", "DeleteOldKey")]
    assert result["keys_remaining"] == 0 and world.key_statuses(user) == {}
    assert result["key_status"] == {result["old_key_id"]: "Deleted"}
    assert result["ci_auth"] == {tid: "oidc" for tid in tids}
    for project in (f"acme/{user}", f"gitlab:acme/{user}"):
        provider, name = split(project)
        emulator = world.emulator(provider)
        assert [emulator.held_value(name, v) for v in demo.KEY_VARIABLES] == [None, None]
        assert emulator.verify_variant(name) == "oidc"
        assert world.run_build(project), f"{target_id(project)} builds through OIDC with no key variable"
    assert result["ci_build_passes"] is True
    graduated_alerts = [a for a in result["alerts"] if a["subject"].startswith("Graduated")]
    assert len(graduated_alerts) == 2 and {a["severity"] for a in graduated_alerts} == {"INFO"}
    assert demo.graduation_ok(result)


def test_a_token_of_another_repository_is_refused_by_the_roles_trust(
        graduated: tuple[dict[str, Any], Path]) -> None:
    result, _ = graduated
    assert result["foreign_token_refused"] is True
    for target in result["targets"]:
        assert target["role_arn"].startswith("arn:aws:iam::") and "/ci-key-rotator/graduated/" in target["role_arn"]
        # The control: the pipeline's own token is accepted by the same role, so the refusal is the sub's.
        assert target["trust"]["own_token"] == "accepted"
        assert target["trust"]["foreign_token"] == "AccessDenied"


def test_graduation_ok_requires_every_promise(graduated: tuple[dict[str, Any], Path]) -> None:
    result, _ = graduated
    for broken in ({"keys_remaining": 1}, {"foreign_token_refused": False}, {"ci_build_passes": False},
                   {"ci_auth": {t["id"]: "keys" for t in result["targets"]}}, {"ci_auth": {}},
                   {"status": "FAILED"}):
        assert not demo.graduation_ok({**result, **broken}), broken


def test_the_leak_scan_finds_id_tokens_and_session_credentials(
        graduated: tuple[dict[str, Any], Path], world: World, tmp_path: Path) -> None:
    """The scenario's ID tokens and STS sessions are secrets to the demo's scan; an ID token (a JWT, with dots)
    is found whole, which the key-shaped pattern alone never did."""
    from moto.sts.models import sts_backends

    result, out = graduated
    user = result["user"]
    secrets = sorted(demo.issued_credential_sha256s())
    assert not demo.scan_for_secrets(out, secrets), "the scenario wrote no token or session credential"

    token = world.github.mint_id_token(f"acme/{user}", "sts.amazonaws.com")
    assert hashlib.sha256(token.encode()).hexdigest() in demo.issued_credential_sha256s()
    sessions = [r for account in sts_backends.values() for backend in account.values()
                for r in backend.assumed_roles if "demo-trust-check" in r.arn]
    assert sessions, "the trust check's own-token session is in moto's STS"
    for name, leaked in (("token", token), ("session-secret", sessions[-1].secret_access_key),
                         ("session-token", sessions[-1].session_token)):
        place = tmp_path / name
        place.mkdir()
        (place / "log.json").write_text(json.dumps({"message": f"oops: {leaked}"}))
        assert demo.scan_for_secrets(place, sorted(demo.issued_credential_sha256s())) == [
            str(place / "log.json")], name


def test_the_page_draws_the_graduation_on_its_own_graph(graduated: tuple[dict[str, Any], Path]) -> None:
    result, out = graduated
    for scenario in demo.SCENARIOS:  # the rotations did not run here: listed without an execution
        (out / "histories" / f"{scenario.name}.json").write_text("[]")
    page = demo.write_page(out).read_text()
    paths = json.loads(re.search(r'<script type="application/json" id="paths">(.*?)</script>', page,
                                 re.S).group(1).replace("<\\/", "</"))  # type: ignore[union-attr]
    path = paths[demo.GRADUATION]
    assert path["graph"] == "graph-1" and paths[demo.AUDIT]["graph"] == "graph"
    graduate_states = set(all_states(demo.load_graduate_asl()))
    assert set(path["visited"]) == set(result["states"]) and set(path["visited"]) <= graduate_states
    assert path["failed"] == [] and path["edges"] and all(e.startswith("g1-e") for e in path["edges"])
    for state in graduate_states:
        assert f'id="g1-state-{state}"' in page
    # Both executions' timelines, one after the other, each target named on its lines.
    section = page.split(f'id="scenario-{demo.GRADUATION}"', 1)[1].split("</section>", 1)[0]
    assert section.count("■ SUCCEEDED") == 2
    for target in result["targets"]:
        assert "▶ GraduatePlan" in section and f"[{target['id']}]" in section


def readme_federation_rows(readme: str) -> dict[str, bool]:
    """provider -> graduates, from the table in the README's "This tool or OIDC?" section."""
    section = readme.split("## This tool or OIDC?", 1)[1].split("\n## ", 1)[0]
    return {name: answer == "yes"
            for name, answer in re.findall(r"^\|[^|`]*\(`([a-z_]+)`\)\s*\|\s*(yes|no)\s*\|", section, flags=re.M)}


def test_the_readme_says_which_providers_graduate_as_federation_for_does(world: World) -> None:
    """Each registered provider's target, as the local world configures it (with the ``oidc:`` block its
    emulator's tokens need), through ``federation_for``: the README's table must list every provider and agree."""
    from chalicelib.federation import Federation, federation_for
    from chalicelib.targets.registry import provider as provider_class
    from chalicelib.targets.registry import providers
    from local.emulators._server import OidcUnsupported

    verdicts: dict[str, bool] = {}
    for name in providers():
        project_name = f"acme/{new_user_name('fedcheck')}"
        project = project_name if name == "github" else f"{name}:{project_name}"
        world.emulator(name).add_project(project_name)
        config = world.target_config(project)
        try:
            settings = world.emulator(name).oidc_settings(project_name)
        except OidcUnsupported:
            settings = {}
        if settings:
            config["oidc"] = settings
        target = provider_class(name).config_model.model_validate(config)
        verdicts[name] = isinstance(federation_for(target), Federation)
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    assert readme_federation_rows(readme) == verdicts, (
        "README.md's table in \"This tool or OIDC?\" must say, for every provider, whether federation_for lets "
        f"its targets graduate: {verdicts}")
