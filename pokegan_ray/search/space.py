"""Hyperparameter search spaces: a YAML file people can edit, checked before any Ray work.

    description: what this space is for
    base:                      # fixed raw config sections, under every trial
      train: {steps: 200}
    dimensions:                # sampled in this order
      loss.name: {type: categorical, values: [dcgan, wgan, wgan-gp]}
      loss.n_critic: {type: int, low: 1, high: 5, when: {loss.name: [wgan, wgan-gp]}}
      loss.generator_learning_rate: {type: float, low: 1.0e-5, high: 1.0e-3, log: true}
      model.conditional: {type: categorical, values: [false, true], when: {data.labelled: [true]}}

A dimension is named `section.key` of `ExperimentConfig`. `when` lists conditions that must all
hold for the dimension to be sampled; each names an earlier categorical dimension or a fact the
caller supplies (FACTS) with the values that switch it on. A dimension that is switched off is
absent from the trial and from its config, so the loss's own default applies.

`define_by_run(space, facts)` is the `space=` for Ray Tune's `OptunaSearch`; `trial_config(space,
sampled)` turns one trial's values into a raw config for `ExperimentConfig.from_dict`.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import yaml

from pokegan_ray.metrics.evaluation import SIGNALS
from pokegan_ray.models.config import require_choice, require_float, require_int
from pokegan_ray.training.config import SECTIONS, ExperimentConfig, merge_sections

# Facts about the run that the caller knows and the space cannot sample: name -> type.
FACTS: dict[str, type] = {"data.labelled": bool}

DIMENSION_TYPES = ("categorical", "float", "int")
TOP_LEVEL_KEYS = ("description", "base", "dimensions", "search")
_KEYS_BY_TYPE = {
    "categorical": {"type", "values", "when", "mutable"},
    "float": {"type", "low", "high", "log", "step", "when", "mutable"},
    "int": {"type", "low", "high", "log", "step", "when"},
}
# Only for checking a space: an AC-GAN config needs a class count, which the runner takes from the
# data. 18 is the number of Pokémon types.
_CHECK_NUM_CLASSES = 18


def config_keys() -> tuple[str, ...]:
    """Every `section.key` a dimension may name, from the config dataclasses themselves."""
    return tuple(f"{section}.{field.name}" for section, config_class in SECTIONS.items()
                 for field in dataclasses.fields(config_class))


@dataclass(frozen=True)
class Dimension:
    name: str
    type: str
    # categorical: the choices (a list in YAML, such as Adam's [beta1, beta2], is kept as a tuple).
    values: tuple[Any, ...] = ()
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    step: float | int | None = None
    # ((dimension or fact, allowed values), ...): all must hold for this dimension to be sampled.
    when: tuple[tuple[str, tuple[Any, ...]], ...] = ()
    # Population Based Training may change it in a running trial (search.scheduler: pbt).
    mutable: bool = False

    def is_active(self, sampled: Mapping[str, Any], facts: Mapping[str, Any]) -> bool:
        for key, allowed in self.when:
            known = facts if key in FACTS else sampled
            if key not in known or not any(_same(known[key], value) for value in allowed):
                return False
        return True

    def choice_labels(self) -> list[Any]:
        """What Optuna sees: it takes only None/bool/int/float/str, so a list becomes its JSON text."""
        return [json.dumps(list(value)) if isinstance(value, tuple) else value for value in self.values]

    def value_of(self, label: Any) -> Any:
        """A sampled value as the config wants it (a list-valued choice back from its label)."""
        if self.type == "categorical" and isinstance(label, str):
            for value, choice in zip(self.values, self.choice_labels()):
                if isinstance(value, tuple) and choice == label:
                    return list(value)
        return list(label) if isinstance(label, tuple) else label

    def suggest(self, trial: Any) -> Any:
        if self.type == "categorical":
            return self.value_of(trial.suggest_categorical(self.name, self.choice_labels()))
        if self.type == "float":
            return trial.suggest_float(self.name, self.low, self.high, log=self.log, step=self.step)
        return trial.suggest_int(self.name, self.low, self.high, log=self.log, step=self.step or 1)


@dataclass(frozen=True)
class SearchSettings:
    """How a space is searched: the file's `search:` section; `pokegan tune` options override some."""

    samples: int = 8  # trials in all
    concurrent: int = 1  # trials at once (capped by what the cluster holds)
    seed: int = 0  # of Optuna's sampler: the same seed proposes the same first trials
    startup_trials: int = 4  # random trials before TPE starts modelling the results
    # "asha": stop trials whose signal is poor at a rung; "pbt": Population Based Training (the worst trials
    # continue from a better one's checkpoint with its mutable dimensions perturbed); "none": every trial runs
    # to its end.
    scheduler: str = "asha"
    # What trials are ranked by at a rung, by the plateau stopper and by Optuna (at a trial's end): fid, kid or
    # fid_infinity, all at train.eval_images generated images (FID at a larger N: raise eval_images).
    signal: str = "fid"
    grace: int = 0  # train's unit (steps, or images with train.images) before the first rung; 0 = train.eval_every
    reduction_factor: float = 3.0  # ASHA keeps the best 1/reduction_factor at each rung
    # Stop a trial whose last `plateau_evaluations` values of the signal vary by less than `plateau_std`, in the
    # signal's own units (0 = off).
    plateau_evaluations: int = 0
    plateau_std: float = 1.0
    # PBT: how often (in train's unit; 0 = train.eval_every) the worst `pbt_quantile` of the trials copy a
    # trial of the best quantile; synchronous: every trial waits at each interval, so all decide together.
    perturbation_interval: int = 0
    pbt_quantile: float = 0.25
    pbt_synchronous: bool = True
    # Trials to run first, before any sampling: dimension -> value (the rest is sampled).
    first_trials: tuple[Mapping[str, Any], ...] = ()

    def __post_init__(self) -> None:
        require_int("search.samples", self.samples, minimum=1)
        require_int("search.concurrent", self.concurrent, minimum=1)
        require_int("search.seed", self.seed, minimum=0)
        require_int("search.startup_trials", self.startup_trials, minimum=1)
        require_choice("search.scheduler", self.scheduler, SCHEDULERS)
        require_choice("search.signal", self.signal, tuple(SIGNALS))
        require_int("search.grace", self.grace, minimum=0)
        require_int("search.perturbation_interval", self.perturbation_interval, minimum=0)
        object.__setattr__(self, "pbt_quantile", require_float("search.pbt_quantile", self.pbt_quantile,
                                                               minimum=0.0, minimum_inclusive=False))
        if self.pbt_quantile > 0.5:
            raise ValueError(f"search.pbt_quantile must be at most 0.5 (the worst and the best quantile cannot "
                             f"overlap), got {self.pbt_quantile}")
        if not isinstance(self.pbt_synchronous, bool):
            raise ValueError(f"search.pbt_synchronous must be true or false, got {self.pbt_synchronous!r}")
        object.__setattr__(self, "reduction_factor", require_float(
            "search.reduction_factor", self.reduction_factor, minimum=1.0, minimum_inclusive=False))
        require_int("search.plateau_evaluations", self.plateau_evaluations, minimum=0)
        object.__setattr__(self, "plateau_std", require_float(
            "search.plateau_std", self.plateau_std, minimum=0.0, minimum_inclusive=False))
        if not isinstance(self.first_trials, (list, tuple)) or not all(
                isinstance(point, Mapping) for point in self.first_trials):
            raise ValueError(f"search.first_trials must be a list of mappings dimension: value, "
                             f"got {self.first_trials!r}")
        object.__setattr__(self, "first_trials", tuple(dict(point) for point in self.first_trials))

    @classmethod
    def from_dict(cls, data: Any, source: str) -> "SearchSettings":
        if data is None:
            return cls()
        if not isinstance(data, Mapping):
            raise ValueError(f"{source}: search must be a mapping such as {{samples: 8}}, got {data!r}")
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known, key=str)
        if unknown:
            raise ValueError(f"{source}: search: unknown key(s) {', '.join(map(repr, unknown))}; allowed: "
                             f"{', '.join(sorted(known))}")
        try:
            return cls(**data)
        except ValueError as error:
            raise ValueError(f"{source}: {error}") from None

    def with_overrides(self, **changes: Any) -> "SearchSettings":
        """`pokegan tune --samples/--concurrent`: None leaves the file's value."""
        return dataclasses.replace(self, **{key: value for key, value in changes.items() if value is not None})


SCHEDULERS = ("asha", "pbt", "none")
# What Population Based Training may perturb in a running trial: the optimiser's rates and betas (set
# again after a checkpoint's optimiser state is loaded), the EMA's decay and the augmentation policy.
MUTABLE_DIMENSIONS = ("loss.generator_learning_rate", "loss.discriminator_learning_rate", "loss.adam_betas",
                      "loss.ema_decay", "loss.augment_policy")


@dataclass(frozen=True)
class SearchSpace:
    dimensions: tuple[Dimension, ...]
    # Raw config sections under every trial (validated together with the dimensions at load time).
    base: Mapping[str, Mapping[str, Any]] = dataclasses.field(default_factory=dict)
    description: str = ""
    # Where the space came from, for messages.
    source: str = "<search space>"
    settings: SearchSettings = dataclasses.field(default_factory=SearchSettings)

    @classmethod
    def load(cls, path: str) -> "SearchSpace":
        try:
            with open(path, encoding="utf-8") as handle:
                data = yaml.safe_load(handle)
        except OSError as error:
            raise ValueError(f"cannot read the search space {path}: {error.strerror}") from None
        except yaml.YAMLError as error:
            raise ValueError(f"{path} is not valid YAML: {error}") from None
        return cls.from_dict(data, source=str(path))

    @classmethod
    def from_dict(cls, data: Any, source: str = "<search space>") -> "SearchSpace":
        if not isinstance(data, Mapping):
            raise ValueError(f"{source}: expected a mapping with keys {', '.join(TOP_LEVEL_KEYS)}, "
                             f"got {type(data).__name__}")
        unknown = sorted(set(data) - set(TOP_LEVEL_KEYS), key=str)
        if unknown:
            raise ValueError(f"{source}: unknown top-level key(s) {', '.join(map(repr, unknown))}; "
                             f"allowed: {', '.join(TOP_LEVEL_KEYS)}")
        description = data.get("description") or ""
        if not isinstance(description, str):
            raise ValueError(f"{source}: description must be text, got {description!r}")
        base = data.get("base") or {}
        try:
            base = merge_sections(base, {})
        except ValueError as error:
            raise ValueError(f"{source}: base: {error}") from None
        dimensions_data = data.get("dimensions")
        if not isinstance(dimensions_data, Mapping) or not dimensions_data:
            raise ValueError(f"{source}: dimensions must be a non-empty mapping of section.key to a dimension")
        dimensions: list[Dimension] = []
        for name, spec in dimensions_data.items():
            dimensions.append(_parse_dimension(source, name, spec, dimensions, base))
        settings = SearchSettings.from_dict(data.get("search"), source)
        space = cls(dimensions=tuple(dimensions), base=base, description=description, source=source,
                    settings=settings)
        _check_configs(space)
        for index, point in enumerate(settings.first_trials):
            _check_first_trial(space, index, point)
        if settings.scheduler == "pbt" and not space.mutable_dimensions:
            raise ValueError(f"{source}: search.scheduler is pbt, but no dimension is marked `mutable: true`; mark "
                             f"what PBT may perturb (some of {', '.join(MUTABLE_DIMENSIONS)})")
        return space

    @property
    def mutable_dimensions(self) -> tuple[Dimension, ...]:
        return tuple(dimension for dimension in self.dimensions if dimension.mutable)

    @property
    def dimension_names(self) -> tuple[str, ...]:
        return tuple(dimension.name for dimension in self.dimensions)

    @property
    def facts_needed(self) -> tuple[str, ...]:
        return tuple(sorted({key for dimension in self.dimensions for key, _ in dimension.when if key in FACTS}))

    def dimension(self, name: str) -> Dimension:
        for dimension in self.dimensions:
            if dimension.name == name:
                return dimension
        raise ValueError(f"{self.source}: no dimension {name!r}; dimensions: "
                         f"{', '.join(d.name for d in self.dimensions)}")


class TrialSampler:
    """Samples one trial's dimensions in file order; the `space=` of Ray Tune's `OptunaSearch`.

    A class rather than a closure because Ray pickles it. Returns the sampled values (list-valued
    choices as lists); Ray adds them over the trial's params, which hold the same values.
    """

    def __init__(self, space: SearchSpace, facts: Mapping[str, Any]):
        self.space = space
        self.facts = _checked_facts(space, facts)

    def __call__(self, trial: Any) -> dict[str, Any]:
        sampled: dict[str, Any] = {}
        for dimension in self.space.dimensions:
            if dimension.is_active(sampled, self.facts):
                sampled[dimension.name] = dimension.suggest(trial)
        return sampled


def define_by_run(space: SearchSpace, facts: Mapping[str, Any]) -> TrialSampler:
    """The define-by-run function for `OptunaSearch(space=...)`; `facts` such as {"data.labelled": True}."""
    return TrialSampler(space, facts)


def trial_config(space: SearchSpace, sampled: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """`base` with the sampled `section.key` values nested into their sections, not yet validated."""
    overrides: dict[str, dict[str, Any]] = {}
    for name, value in sampled.items():
        section, key = name.split(".", 1) if isinstance(name, str) and "." in name else (None, name)
        overrides.setdefault(section, {})[key] = space.dimension(name).value_of(value)
    return merge_sections(copy.deepcopy(dict(space.base)), overrides)


# -- parsing --------------------------------------------------------------------------------
def _parse_dimension(source: str, name: Any, spec: Any, earlier: list[Dimension],
                     base: Mapping[str, Mapping[str, Any]]) -> Dimension:
    where = f"{source}: dimension {name!r}"
    if name not in config_keys():
        raise ValueError(f"{where}: not a config key; a dimension is section.key, one of: {', '.join(config_keys())}")
    section, key = name.split(".", 1)
    if section == "scale":
        # Every trial of a search asks the cluster for the same resources, so the search can size its
        # concurrency (and check the cluster) once, before Tune starts.
        raise ValueError(f"{where}: how trials run is not a hyperparameter; set scale.{key} in base (or --set)")
    if key in base.get(section, {}):
        raise ValueError(f"{where}: also fixed in base; keep it in one place")
    if not isinstance(spec, Mapping):
        raise ValueError(f"{where}: expected a mapping such as {{type: float, low: 1.0e-5, high: 1.0e-3}}, got {spec!r}")
    kind = spec.get("type")
    if kind not in DIMENSION_TYPES:
        raise ValueError(f"{where}: type must be one of {', '.join(DIMENSION_TYPES)}, got {kind!r}")
    unknown = sorted(set(spec) - _KEYS_BY_TYPE[kind], key=str)
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {', '.join(map(repr, unknown))} for type {kind}; "
                         f"allowed: {', '.join(sorted(_KEYS_BY_TYPE[kind]))}")
    when = _parse_when(where, spec.get("when"), earlier)
    mutable = _parse_mutable(where, name, spec.get("mutable", False), when)
    if kind == "categorical":
        return Dimension(name=name, type=kind, values=_parse_values(where, spec.get("values")), when=when,
                         mutable=mutable)

    number = int if kind == "int" else (int, float)
    bounds = {}
    for bound in ("low", "high"):
        value = spec.get(bound)
        if isinstance(value, bool) or not isinstance(value, number):
            hint = " (YAML reads 1e-5 as text: write 1.0e-5)" if isinstance(value, str) else ""
            raise ValueError(f"{where}: {bound} must be {'an integer' if kind == 'int' else 'a number'}, "
                             f"got {value!r}{hint}")
        bounds[bound] = value if kind == "int" else float(value)
    if bounds["low"] >= bounds["high"]:
        raise ValueError(f"{where}: low must be below high, got low={bounds['low']} high={bounds['high']}")
    log = spec.get("log", False)
    if not isinstance(log, bool):
        raise ValueError(f"{where}: log must be true or false, got {log!r}")
    if log and bounds["low"] <= 0:
        raise ValueError(f"{where}: a log scale needs low > 0, got low={bounds['low']}")
    step = spec.get("step")
    if step is not None:
        if isinstance(step, bool) or not isinstance(step, number) or step <= 0:
            raise ValueError(f"{where}: step must be a positive {'integer' if kind == 'int' else 'number'}, got {step!r}")
        # Optuna cannot combine them: a log scale has no even step.
        if log and step != 1:
            raise ValueError(f"{where}: step cannot be combined with log: true")
        step = step if kind == "int" else float(step)
    return Dimension(name=name, type=kind, low=bounds["low"], high=bounds["high"], log=log, step=step, when=when,
                     mutable=mutable)


def _parse_mutable(where: str, name: str, mutable: Any, when: tuple) -> bool:
    """`mutable: true` (PBT may change it mid-run): only for what a trial can change without new networks
    or a new loss, and never for a dimension some trials lack."""
    if not isinstance(mutable, bool):
        raise ValueError(f"{where}: mutable must be true or false, got {mutable!r}")
    if mutable and name not in MUTABLE_DIMENSIONS:
        raise ValueError(f"{where}: cannot be mutable: a running trial can only change "
                         f"{', '.join(MUTABLE_DIMENSIONS)}")
    if mutable and when:
        raise ValueError(f"{where}: a mutable dimension cannot have `when`: PBT copies it between trials, so "
                         "every trial must have it")
    return mutable


def _parse_values(where: str, values: Any) -> tuple[Any, ...]:
    if not isinstance(values, list) or not values:
        raise ValueError(f"{where}: values must be a non-empty list, got {values!r}")
    scalar = (str, bool, int, float, type(None))
    parsed = []
    for value in values:
        if isinstance(value, list) and value and all(isinstance(item, scalar) for item in value):
            value = tuple(value)
        elif not isinstance(value, scalar):
            raise ValueError(f"{where}: each value must be a number, text, true/false, null or a list of "
                             f"those, got {value!r}")
        parsed.append(value)
    if len({isinstance(value, tuple) for value in parsed}) > 1:
        raise ValueError(f"{where}: values must be all lists or all single values, got {values!r}")
    for index, value in enumerate(parsed):
        if any(_same(value, other) for other in parsed[:index]):
            raise ValueError(f"{where}: value {value!r} is listed twice")
    return tuple(parsed)


def _parse_when(where: str, when: Any, earlier: list[Dimension]) -> tuple[tuple[str, tuple[Any, ...]], ...]:
    if when is None:
        return ()
    if not isinstance(when, Mapping) or not when:
        raise ValueError(f"{where}: when must map earlier dimensions or facts to lists of values, "
                         f"such as {{loss.name: [wgan, wgan-gp]}}, got {when!r}")
    by_name = {dimension.name: dimension for dimension in earlier}
    conditions = []
    for key, allowed in when.items():
        if not isinstance(allowed, list) or not allowed:
            raise ValueError(f"{where}: when {key!r} must list the values that switch this dimension on, got {allowed!r}")
        allowed = tuple(tuple(value) if isinstance(value, list) else value for value in allowed)
        if key in FACTS:
            wrong = [value for value in allowed if not isinstance(value, FACTS[key])]
            if wrong:
                raise ValueError(f"{where}: when {key!r}: the fact is {FACTS[key].__name__}, got {wrong[0]!r}")
        elif key in by_name:
            condition = by_name[key]
            if condition.type != "categorical":
                raise ValueError(f"{where}: when {key!r}: only categorical dimensions (or facts) can switch "
                                 f"others on, and {key!r} is {condition.type}")
            missing = [value for value in allowed if not any(_same(value, choice) for choice in condition.values)]
            if missing:
                raise ValueError(f"{where}: when {key!r}: {missing[0]!r} is not one of its values "
                                 f"({', '.join(map(repr, condition.values))})")
        else:
            later = " (it comes later: dimensions are sampled in file order)" if key in config_keys() else ""
            raise ValueError(f"{where}: when refers to {key!r}, which is neither an earlier dimension nor a "
                             f"fact ({', '.join(FACTS)}){later}")
        conditions.append((key, allowed))
    return tuple(conditions)


def _check_first_trial(space: SearchSpace, index: int, point: Mapping[str, Any]) -> None:
    """A first trial names dimensions only, with values each dimension could sample."""
    where = f"{space.source}: search.first_trials[{index}]"
    names = space.dimension_names
    unknown = [key for key in point if key not in names]
    if unknown:
        raise ValueError(f"{where}: {unknown[0]!r} is not a dimension of this space; dimensions: {', '.join(names)}")
    for key, value in point.items():
        dimension = space.dimension(key)
        if dimension.type == "categorical":
            wanted = tuple(value) if isinstance(value, list) else value
            if not any(_same(wanted, choice) for choice in dimension.values):
                raise ValueError(f"{where}: {key}={value!r} is not one of {list(dimension.values)!r}")
        elif isinstance(value, bool) or not isinstance(value, (int, float)) or not (
                dimension.low <= value <= dimension.high) or (dimension.type == "int" and not isinstance(value, int)):
            raise ValueError(f"{where}: {key}={value!r} must be {'an integer' if dimension.type == 'int' else 'a number'}"
                             f" from {dimension.low} to {dimension.high}")


def _same(a: Any, b: Any) -> bool:
    """Equality that keeps true apart from 1 (YAML gives both, and Python calls them equal)."""
    return type(a) is type(b) and a == b if isinstance(a, bool) or isinstance(b, bool) else a == b


def _checked_facts(space: SearchSpace, facts: Mapping[str, Any]) -> dict[str, Any]:
    if not isinstance(facts, Mapping):
        raise ValueError(f"facts must be a mapping such as {{'data.labelled': True}}, got {facts!r}")
    unknown = sorted(set(facts) - set(FACTS), key=str)
    if unknown:
        raise ValueError(f"unknown fact(s) {', '.join(map(repr, unknown))}; known: {', '.join(FACTS)}")
    missing = [fact for fact in space.facts_needed if fact not in facts]
    if missing:
        raise ValueError(f"{space.source} needs the fact(s) {', '.join(missing)}")
    for fact, value in facts.items():
        if not isinstance(value, FACTS[fact]):
            raise ValueError(f"fact {fact} must be {FACTS[fact].__name__}, got {value!r}")
    return dict(facts)


# -- checking whole configs -----------------------------------------------------------------
def _check_configs(space: SearchSpace) -> None:
    """Build a config for every categorical value and both ends of every range (one at a time).

    The other dimensions take their first value (or low), and the conditions that switch the probed
    dimension on are met, so a typo in base or a value the config rejects fails here, naming the
    dimension. Combinations of two values are left to the sampled trials.
    """
    by_name = {dimension.name: dimension for dimension in space.dimensions}
    for target in space.dimensions:
        required = _requirements(space.source, target, by_name)
        facts = {fact: required[fact][0] if fact in required else False for fact in FACTS}
        probes = target.values if target.type == "categorical" else (target.low, target.high)
        for probe in probes:
            sampled: dict[str, Any] = {}
            for dimension in space.dimensions:
                if not dimension.is_active(sampled, facts):
                    continue
                if dimension is target:
                    sampled[dimension.name] = probe
                elif dimension.name in required:
                    sampled[dimension.name] = required[dimension.name][0]
                else:
                    sampled[dimension.name] = dimension.values[0] if dimension.type == "categorical" else dimension.low
            if target.name not in sampled:
                raise ValueError(f"{space.source}: dimension {target.name!r} can never be sampled: its when "
                                 f"conditions cannot all hold")
            raw = trial_config(space, sampled)
            if raw.get("model", {}).get("conditional") is True:
                raw["model"].setdefault("num_classes", _CHECK_NUM_CLASSES)
            try:
                ExperimentConfig.from_dict(raw)
            except ValueError as error:
                # Blame the dimension the config's message names first (it names keys), else the probed one.
                mentioned = [name for name in sampled if name in str(error)]
                culprit = min(mentioned, key=str(error).find) if mentioned else target.name
                shown = ", ".join(f"{key}={value!r}" for key, value in sampled.items())
                raise ValueError(f"{space.source}: dimension {culprit!r} gives an invalid config (base with "
                                 f"{shown}): {error}") from None


def _requirements(source: str, target: Dimension, by_name: Mapping[str, Dimension]) -> dict[str, tuple[Any, ...]]:
    """The values each condition (transitively) must take for `target` to be sampled."""
    required: dict[str, tuple[Any, ...]] = {}
    pending = [target]
    while pending:
        for key, allowed in pending.pop().when:
            if key in required:
                allowed = tuple(value for value in required[key] if any(_same(value, a) for a in allowed))
            elif key in by_name:
                pending.append(by_name[key])
            if not allowed:
                raise ValueError(f"{source}: dimension {target.name!r} can never be sampled: its when "
                                 f"conditions on {key!r} contradict each other")
            required[key] = allowed
    return required
