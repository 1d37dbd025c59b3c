"""Typed configuration: one schema for YAML files and command-line overrides.

Every entry point is configured the same way: a YAML file supplies values, `key.sub=value`
arguments override them, and both go through the schema (types converted and checked, unknown
keys and impossible values rejected with the key named) before any work starts.

    python -m pipeline.config configs/quickstart.yaml train.epochs=5   # print the validated config
    python -m pipeline.config --markdown                               # the reference table alone
    python -m pipeline.config --docs                                   # rewrite docs/configuration.md

Each section is a pydantic model (a typed dataclass with validation); each field carries its
default, its meaning and its unit. Components receive only their own section
(`build_loader(cfg.data, ...)`, `build_optimizer(cfg.optim, ...)`).

    schema.py      the sections and `Config`: every key, its default, meaning and bounds
    checks.py      rules across fields, and the one-line message each error becomes
    loading.py     defaults <- YAML <- overrides, keys of earlier versions, entry points' arguments
    reference.py   docs/configuration.md, generated from the schema
    resume.py      which keys may change when a run continues, as each field declares it (on_resume)
    cli.py         python -m pipeline.config

Callers import from `pipeline.config`; the names below are its public ones.
"""

from pipeline.config.checks import describe_ignored, duration_seconds, ignored_data_keys
from pipeline.config.cli import auto_keys, build_parser, main, validated_yaml
from pipeline.config.loading import (config_from_cli, from_dict, load_config, load_config_args, parse_overrides,
                                     save_config, split_args)
from pipeline.config.reference import DOCS_PAGE, TABLE_HEADER, configuration_page, markdown_reference
from pipeline.config.resume import FREE_KEYS, MUST_MATCH, NAMING_KEYS, NOT_COMPARED_KEYS, key_classes
from pipeline.config.schema import (MODEL_NAMES, ROOT_HINTS, SOURCE_KEYS, SOURCE_NAMES, CheckpointConfig, CompileMode,
                                    Config, DataConfig, DistConfig, EvalAugmentConfig, EvalConfig, Interpolation,
                                    LoggingConfig, ModelConfig, ModelName, OnResume, OptimConfig, ScheduleConfig,
                                    Section, TrainAugmentConfig, TrainConfig, WandbConfig)
from pipeline.errors import ConfigError
from pipeline.sources import DATA_KEYS

__all__ = [
    # the schema
    "Config", "Section", "ModelConfig", "DataConfig", "TrainAugmentConfig", "EvalAugmentConfig", "OptimConfig",
    "ScheduleConfig", "TrainConfig", "EvalConfig", "DistConfig", "LoggingConfig", "WandbConfig", "CheckpointConfig",
    "ModelName", "MODEL_NAMES", "CompileMode", "Interpolation",
    "SOURCE_KEYS", "SOURCE_NAMES", "DATA_KEYS", "ROOT_HINTS",
    # what a new value does when a run continues, as the fields declare it
    "OnResume", "key_classes", "FREE_KEYS", "NAMING_KEYS", "NOT_COMPARED_KEYS", "MUST_MATCH",
    # checks
    "ConfigError", "describe_ignored", "ignored_data_keys", "duration_seconds",
    # loading
    "load_config", "load_config_args", "config_from_cli", "from_dict", "parse_overrides", "split_args", "save_config",
    # the reference page and python -m pipeline.config
    "DOCS_PAGE", "TABLE_HEADER", "configuration_page", "markdown_reference",
    "auto_keys", "build_parser", "main", "validated_yaml",
]
