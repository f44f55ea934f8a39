"""The shipped verification pipeline files (templates/verify/) read the way each CI reads them.

An emulator's build is the verification job of its provider's template: its shell steps, with the
variables that CI would put in the job's environment, run by ``bash`` with ``aws`` on PATH being the
shim in this folder. So a change to a template changes what the tests run. Only what the templates use is
understood; anything else is a :class:`TemplateError` (the build fails), never silently skipped.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
TEMPLATE_DIR = REPO_ROOT / "templates" / "verify"
#: Where each provider's file lives under a template directory (the path it is copied to in a repository
#: is in each file's header). A provider added later registers its reader and file with ``@reader`` from its
#: emulator module instead of editing this table (``providers()`` finds them).
FILES: dict[str, str] = {
    "github": "github/rotate-verify.yml",
    "gitlab": "gitlab/.gitlab-ci.yml",
    "circleci": "circleci/config.yml",
    "travis": "travis/.travis.yml",
    "bitbucket": "bitbucket/bitbucket-pipelines.yml",
}
#: The verification job's name in every template (Bitbucket: the custom pipeline's step).
JOB = "rotation-verify"
#: Which verification file a build runs: the key pair the rotator pushes, or OIDC federation only (the file of
#: the same name under ``<provider>/oidc/``; docs/oidc.md). Travis CI has no OIDC variant.
VARIANTS = ("keys", "oidc")


def file_for(provider: str, variant: str = "keys") -> str:
    """The path of ``provider``'s ``variant`` file under a template directory."""
    if variant not in VARIANTS:
        raise TemplateError(f"no verification variant {variant!r}; one of {', '.join(VARIANTS)}")
    if variant == "keys":
        return FILES[provider]
    folder, _, name = FILES[provider].rpartition("/")
    return f"{folder}/oidc/{name}"
NONCE_INPUT = "nonce"


class TemplateError(ValueError):
    """The template cannot be run: missing job, unsupported construct, unknown expression."""


@dataclass(frozen=True)
class Step:
    name: str
    script: str
    #: Variables the step adds to the CI variables (already interpolated).
    env: dict[str, str] = field(default_factory=dict)
    #: Travis runs every ``script`` command even after one failed (the build still fails); others stop.
    keep_going: bool = False
    #: The OIDC ID tokens the CI hands this step, as (how, audience): the variable that carries it
    #: (``ACTIONS_ID_TOKEN_REQUEST_URL``: GitHub's request endpoint instead of a token) and the audience the
    #: file asks for (None: the provider's default). Handed over by local/oidc.py's Grant.
    id_tokens: tuple[tuple[str, str | None], ...] = ()


@dataclass(frozen=True)
class Job:
    steps: tuple[Step, ...]
    #: False: the CI exports only what the file names (GitHub secrets); True: every CI variable is exported.
    exports_variables: bool
    #: CircleCI ``store_artifacts`` steps as (path relative to the working directory, destination): kept when
    #: every step before them passed (their default ``when: on_success``).
    artifacts: tuple[tuple[str, str], ...] = ()


class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads GitLab's ``!reference [job, key]`` tag (kept as a list; not followed)."""


_Loader.add_constructor("!reference", lambda loader, node: loader.construct_sequence(node))


def load(provider: str, variables: Mapping[str, str], inputs: Mapping[str, str],
         template_dir: Path = TEMPLATE_DIR, variant: str = "keys") -> Job:
    """The verification job of ``provider``'s template, interpolated with ``inputs`` (the nonce) and, for
    GitHub, ``variables`` (its secrets, which reach a job only through expressions)."""
    if provider not in _READERS:
        providers()  # a reader registered by an emulator module not imported yet
    try:
        reader = _READERS[provider]
    except KeyError:
        raise TemplateError(f"no verification template for provider {provider!r}") from None
    relative = file_for(provider, variant)
    try:
        text = (template_dir / relative).read_text(encoding="utf-8")
    except OSError as exc:
        raise TemplateError(f"cannot read {relative}: {type(exc).__name__}") from None
    try:
        return reader(text, variables, inputs)
    except yaml.YAMLError as exc:
        raise TemplateError(f"{relative} is not valid YAML: {exc}") from None


def parse(text: str) -> list[Any]:
    """Every YAML document of a template (GitLab's has two: the ``spec`` header and the pipeline)."""
    return list(yaml.load_all(text, Loader=_Loader))


def _mapping(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise TemplateError(f"{what} must be a mapping")
    return value


def _script_lines(value: Any, what: str) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(line, str) for line in value):
        return value
    raise TemplateError(f"{what} must be a string or a list of strings")


# -- GitHub Actions ---------------------------------------------------------------------------------

_GH_EXPRESSION = re.compile(r"\$\{\{\s*(.*?)\s*\}\}")
_GH_REFERENCE = re.compile(r"^(secrets|inputs|vars)\.([A-Za-z_][A-Za-z0-9_-]*)$")


def _github(text: str, variables: Mapping[str, str], inputs: Mapping[str, str]) -> Job:
    doc = _mapping(parse(text)[0], "the workflow")
    secrets = {k.upper(): v for k, v in variables.items()}

    def evaluate(value: Any) -> str:
        def one(match: re.Match[str]) -> str:
            ref = _GH_REFERENCE.match(match.group(1))
            if ref is None:
                raise TemplateError(f"unsupported expression ${{{{ {match.group(1)} }}}}")
            context, name = ref.groups()
            # GitHub: an unset secret or input evaluates to an empty string; secret names ignore case.
            if context == "secrets":
                return secrets.get(name.upper(), "")
            return inputs.get(name, "") if context == "inputs" else ""
        return _GH_EXPRESSION.sub(one, str(value))

    job = _mapping(_mapping(doc.get("jobs"), "jobs").get(JOB), f"jobs.{JOB}")
    base = {k: evaluate(v) for k, v in {**(doc.get("env") or {}), **(job.get("env") or {})}.items()}
    # A job's permissions replace the workflow's; only id-token: write (or write-all) lets it request an ID
    # token: https://docs.github.com/en/actions/reference/security/oidc
    permissions = job.get("permissions", doc.get("permissions"))
    requests_token = permissions == "write-all" or (
        isinstance(permissions, dict) and permissions.get("id-token") == "write")
    id_tokens = (("ACTIONS_ID_TOKEN_REQUEST_URL", None),) if requests_token else ()
    steps = []
    for index, step in enumerate(job.get("steps") or []):
        step = _mapping(step, f"jobs.{JOB}.steps[{index}]")
        if "run" not in step:
            # Actions (uses:) cannot run here; a template that needs one must say how to verify without it.
            raise TemplateError(f"jobs.{JOB}.steps[{index}] is not a run step")
        env = {**base, **{k: evaluate(v) for k, v in (step.get("env") or {}).items()}}
        steps.append(Step(str(step.get("name") or f"step {index + 1}"), evaluate(step["run"]), env,
                          id_tokens=id_tokens))
    return Job(tuple(steps), exports_variables=False)


# -- GitLab CI --------------------------------------------------------------------------------------

_GL_INPUT = re.compile(r"\$\[\[\s*inputs\.([A-Za-z0-9_-]+)\s*\]\]")


def _gitlab(text: str, variables: Mapping[str, str], inputs: Mapping[str, str]) -> Job:
    header, _, body = text.partition("\n---\n")
    if not body:
        raise TemplateError("the file needs a spec: header and a pipeline document separated by ---")
    spec = _mapping(_mapping(_mapping(parse(header)[0], "the header").get("spec"), "spec").get("inputs"),
                    "spec.inputs")
    values: dict[str, str] = {}
    for name, definition in spec.items():
        definition = definition or {}
        if name in inputs:
            values[name] = inputs[name]
        elif "default" in definition:
            values[name] = str(definition["default"])
        else:
            raise TemplateError(f"input {name!r} has no default and was not given")

    def interpolate(match: re.Match[str]) -> str:
        if match.group(1) not in values:
            raise TemplateError(f"unknown input {match.group(1)!r}")
        return values[match.group(1)]

    doc = _mapping(parse(_GL_INPUT.sub(interpolate, body))[0], "the pipeline")
    if JOB not in doc:
        raise TemplateError(f"no job {JOB!r}")
    variables_block = {k: str(v) for k, v in (doc.get("variables") or {}).items()}
    # What a rule sees in a pipeline the rotator starts through the API.
    context = {**variables, **variables_block, "CI_PIPELINE_SOURCE": "api"}
    # GitLab runs every job whose rules admit the pipeline: the verification job must be one of them, and
    # every other job that is admitted runs too (in file order; stages are not modelled).
    jobs = [name for name, job in doc.items() if _is_job(name, job) and _admitted(doc, name, context)]
    if JOB not in jobs:
        raise TemplateError(f"the rules of {JOB!r} keep it out of an API-triggered verification pipeline")
    steps = []
    for name in jobs:
        job = doc[name]
        env = {**variables_block, **{k: str(v) for k, v in (job.get("variables") or {}).items()}}
        lines = [*_script_lines(job.get("before_script", []), f"{name}.before_script"),
                 *_script_lines(job.get("script"), f"{name}.script")]
        tokens = _gitlab_id_tokens(job.get("id_tokens"), name)
        steps += [Step(f"{name} {i + 1}", line, env, id_tokens=tokens) for i, line in enumerate(lines)]
    return Job(tuple(steps), exports_variables=True)


def _gitlab_id_tokens(value: Any, job: str) -> tuple[tuple[str, str | None], ...]:
    """``id_tokens: {NAME: {aud: ...}}``: each NAME holds a JWT with that ``aud``.
    https://docs.gitlab.com/ci/yaml/#id_tokens"""
    tokens = []
    for name, spec in _mapping(value or {}, f"{job}.id_tokens").items():
        audience = _mapping(spec, f"{job}.id_tokens.{name}").get("aud")
        if not isinstance(audience, str) or not audience:
            raise TemplateError(f"{job}.id_tokens.{name}.aud must be a non-empty string")
        tokens.append((str(name), audience))
    return tuple(tokens)


_GL_KEYWORDS = frozenset({"default", "include", "stages", "variables", "workflow", "spec", "image", "services",
                          "cache", "before_script", "after_script"})
_GL_COMPARISON = re.compile(r"""^\$(\w+)\s*(==|!=)\s*(?:"([^"]*)"|'([^']*)')$""")
_GL_PRESENT = re.compile(r"^\$(\w+)$")


def _is_job(name: Any, job: Any) -> bool:
    return (isinstance(name, str) and not name.startswith(".") and name not in _GL_KEYWORDS
            and isinstance(job, dict) and "script" in job)


def _admitted(doc: Mapping[str, Any], name: str, context: Mapping[str, str]) -> bool:
    """GitLab's ``rules:``: the first rule whose ``if`` holds decides (``when: never`` excludes); no rule
    holding excludes the job; no ``rules`` at all admits it. https://docs.gitlab.com/ci/yaml/#rules"""
    rules = doc[name].get("rules")
    if rules is None:
        return True
    if isinstance(rules, list) and len(rules) == 2 and all(isinstance(r, str) for r in rules):
        # ``!reference [job, key]``: the referenced job's rules.
        rules = _mapping(doc.get(rules[0]), f"!reference {rules}").get(rules[1])
    if not isinstance(rules, list):
        raise TemplateError(f"{name}.rules must be a list")
    for rule in rules:
        rule = _mapping(rule, f"{name}.rules[]")
        if "if" not in rule or _holds(str(rule["if"]), context):
            return rule.get("when", "on_success") != "never"
    return False


def _holds(expression: str, context: Mapping[str, str]) -> bool:
    """The subset of GitLab's CI/CD expressions the templates use: ``$VAR == "x"``, ``$VAR != "x"``,
    ``$VAR`` (set and non-empty), joined by ``&&`` / ``||`` without parentheses (``&&`` binds tighter).
    https://docs.gitlab.com/ci/jobs/job_rules/#cicd-variable-expressions"""
    def term(text: str) -> bool:
        text = text.strip()
        if match := _GL_COMPARISON.match(text):
            name, operator, double, single = match.groups()
            literal = double if double is not None else single
            return (context.get(name, "") == literal) == (operator == "==")
        if match := _GL_PRESENT.match(text):
            return bool(context.get(match.group(1)))
        raise TemplateError(f"unsupported rules expression {text!r}")

    return any(all(term(t) for t in alternative.split("&&")) for alternative in expression.split("||"))


# -- CircleCI ---------------------------------------------------------------------------------------

_CIRCLE_PARAMETER = re.compile(r"<<\s*pipeline\.parameters\.([A-Za-z0-9_-]+)\s*>>")


def _circleci(text: str, variables: Mapping[str, str], inputs: Mapping[str, str]) -> Job:
    doc = _mapping(parse(text)[0], "the config")
    declared = _mapping(doc.get("parameters") or {}, "parameters")

    def interpolate(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in declared:
            # CircleCI refuses a pipeline whose config names an undeclared parameter.
            raise TemplateError(f"undeclared pipeline parameter {name!r}")
        return inputs.get(name, str(_mapping(declared[name], name).get("default", "")))

    job = _mapping(_mapping(doc.get("jobs"), "jobs").get(JOB), f"jobs.{JOB}")
    env = {k: _CIRCLE_PARAMETER.sub(interpolate, str(v)) for k, v in (job.get("environment") or {}).items()}
    steps = []
    artifacts: list[tuple[str, str]] = []
    for index, step in enumerate(job.get("steps") or []):
        if step == "checkout":
            continue  # the local build has no repository to check out; the script needs none
        if isinstance(step, dict) and "store_artifacts" in step:
            # https://circleci.com/docs/configuration-reference/#storeartifacts
            stored = _mapping(step["store_artifacts"], f"jobs.{JOB}.steps[{index}].store_artifacts")
            path = str(stored.get("path") or "")
            if not path or path.startswith("/") or ".." in path.split("/"):
                raise TemplateError(f"jobs.{JOB}.steps[{index}].store_artifacts: only a path inside the working "
                                    "directory is supported")
            artifacts.append((path, str(stored.get("destination") or path).strip("/")))
            continue
        run = _mapping(step, f"jobs.{JOB}.steps[{index}]").get("run")
        if isinstance(run, str):
            run = {"command": run}
        run = _mapping(run, f"jobs.{JOB}.steps[{index}].run")
        command = _CIRCLE_PARAMETER.sub(interpolate, str(run.get("command", "")))
        step_env = {**env, **{k: str(v) for k, v in (run.get("environment") or {}).items()}}
        # CircleCI puts both ID tokens in every job's environment: https://circleci.com/docs/openid-connect-tokens/
        steps.append(Step(str(run.get("name") or f"step {index + 1}"), command, step_env,
                          id_tokens=(("CIRCLE_OIDC_TOKEN", None), ("CIRCLE_OIDC_TOKEN_V2", None))))
    return Job(tuple(steps), exports_variables=True, artifacts=tuple(artifacts))


# -- Travis CI --------------------------------------------------------------------------------------

def _travis(text: str, variables: Mapping[str, str], inputs: Mapping[str, str]) -> Job:
    doc = _mapping(parse(text)[0], "the config")
    include = _mapping(doc.get("jobs"), "jobs").get("include") or []
    job = next((j for j in include if isinstance(j, dict) and j.get("name") == JOB), None)
    if job is None:
        raise TemplateError(f"no jobs.include entry named {JOB!r}")
    phases = [(phase, _script_lines(job.get(phase, []), phase)) for phase in ("install", "before_script")]
    setup = [Step(f"{phase} {i + 1}", line) for phase, lines in phases for i, line in enumerate(lines)]
    script = [Step(f"script {i + 1}", line, keep_going=True)
              for i, line in enumerate(_script_lines(job.get("script"), "script"))]
    return Job((*setup, *script), exports_variables=True)


# -- Bitbucket Pipelines ----------------------------------------------------------------------------

def _bitbucket(text: str, variables: Mapping[str, str], inputs: Mapping[str, str]) -> Job:
    doc = _mapping(parse(text)[0], "the config")
    custom = _mapping(_mapping(doc.get("pipelines"), "pipelines").get("custom"), "pipelines.custom")
    if not custom:
        raise TemplateError("no custom pipeline")
    items = next(iter(custom.values()))
    steps = []
    for item in items if isinstance(items, list) else []:
        if isinstance(item, dict) and "step" in item:
            step = _mapping(item["step"], "step")
            # ``oidc: true`` gives the step BITBUCKET_STEP_OIDC_TOKEN, a token of its own (docs/oidc.md).
            tokens = (("BITBUCKET_STEP_OIDC_TOKEN", None),) if step.get("oidc") is True else ()
            for i, line in enumerate(_script_lines(step.get("script"), "step.script")):
                steps.append(Step(f"{step.get('name', 'step')} {i + 1}", line, id_tokens=tokens))
    if not steps:
        raise TemplateError("the custom pipeline has no step with a script")
    return Job(tuple(steps), exports_variables=True)


Reader = Callable[[str, Mapping[str, str], Mapping[str, str]], Job]

_READERS: dict[str, Reader] = {
    "github": _github, "gitlab": _gitlab, "circleci": _circleci, "travis": _travis, "bitbucket": _bitbucket,
}


def reader(provider: str, file: str) -> Callable[[Reader], Reader]:
    """Decorator: ``fn(text, variables, inputs) -> Job`` reads ``provider``'s template at ``file`` (relative to
    the template directory). Lets a provider keep its reader next to its emulator, with no edit here."""
    def register(fn: Reader) -> Reader:
        _READERS[provider] = fn
        FILES[provider] = file
        return fn
    return register


def providers() -> list[str]:
    """Every provider with a verification template, importing the emulator modules (where later readers live)
    on first use."""
    from local.emulators.base import emulators  # here: the emulators import this module

    emulators()
    return sorted(FILES)
