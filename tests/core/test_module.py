"""KMM Module parsing, kernel mapping and per-kernel targets (kmm_dtk.core.module)."""

from __future__ import annotations

import copy

import pytest

from kmm_dtk.core.module import (
    BuildConfig,
    ModuleError,
    RegistryTLS,
    parse_module,
    render_image,
    target_for,
    template_variables,
)

K96 = "5.14.0-570.27.1.el9_6.x86_64"
K94_RT = "5.14.0-427.68.1.el9_4.x86_64+rt"
K96_64K = "5.14.0-570.73.1.el9_6.aarch64+64k"
K84 = "4.18.0-305.49.1.el8_4.x86_64"
C = "spec.moduleLoader.container"


def module_dict(**container_overrides) -> dict:
    """A realistic Module, shaped like KMM's documentation examples."""
    container = {
        "modprobe": {"moduleName": "kmm_ci_a"},
        "containerImage": "quay.io/acme/kmm-kmod:${KERNEL_FULL_VERSION}",
        "build": {
            "dockerfileConfigMap": {"name": "kmm-kmod-dockerfile"},
            "buildArgs": [{"name": "KMOD_VERSION", "value": "1.0.2"}],
            "secrets": [{"name": "build-secret"}],
        },
        "kernelMappings": [
            {"regexp": r"^.+\.el9_\d+\.x86_64$"},
        ],
    }
    container.update(container_overrides)
    return {
        "apiVersion": "kmm.sigs.x-k8s.io/v1beta1",
        "kind": "Module",
        "metadata": {"name": "kmm-ci-a", "namespace": "kmm-tests", "uid": "4f1c0e0a-2f6c-4d4e-9a55-1c1d7f0e2b11",
                     "generation": 3},
        "spec": {
            "selector": {"node-role.kubernetes.io/worker": ""},
            "imageRepoSecret": {"name": "registry-push"},
            "moduleLoader": {"container": container},
        },
    }


def test_parse_realistic_module():
    m = parse_module(module_dict())
    assert m.key == "kmm-tests/kmm-ci-a"
    assert m.uid == "4f1c0e0a-2f6c-4d4e-9a55-1c1d7f0e2b11"
    assert m.generation == 3
    assert m.selector == {"node-role.kubernetes.io/worker": ""}
    assert m.image_repo_secret == "registry-push"
    assert m.rebuild_trigger_generation is None
    assert m.container_image == "quay.io/acme/kmm-kmod:${KERNEL_FULL_VERSION}"
    assert m.build == BuildConfig("kmm-kmod-dockerfile", (("KMOD_VERSION", "1.0.2"),), ("build-secret",))
    assert len(m.mappings) == 1
    assert m.mappings[0].path == f"{C}.kernelMappings[0]"


def test_namespace_defaults_to_default():
    raw = module_dict()
    del raw["metadata"]["namespace"]
    assert parse_module(raw).namespace == "default"


def test_parse_does_not_mutate_input():
    raw = module_dict()
    before = copy.deepcopy(raw)
    parse_module(raw)
    assert raw == before


def _set(raw: dict, path: str, value) -> dict:
    """Set (or with value=KeyError delete) a dotted path; list indexes as [n]."""
    parts = path.replace("[", ".[").split(".")
    obj = raw
    for part in parts[:-1]:
        obj = obj[int(part[1:-1])] if part.startswith("[") else obj[part]
    last = parts[-1]
    key = int(last[1:-1]) if last.startswith("[") else last
    if value is KeyError:
        del obj[key]
    else:
        obj[key] = value
    return raw


@pytest.mark.parametrize(
    "path, value, expected",
    [
        ("metadata", KeyError, "metadata is required"),
        ("metadata.name", KeyError, "metadata.name is required"),
        ("metadata.name", "", "metadata.name is required"),
        ("spec", KeyError, "spec is required"),
        ("spec", "module", "spec must be an object"),
        ("spec.selector", KeyError, "spec.selector is required"),
        ("spec.selector", ["worker"], "spec.selector must be an object"),
        ("spec.selector", {"node-role.kubernetes.io/worker": True}, "spec.selector must map label names"),
        ("spec.moduleLoader", KeyError, "spec.moduleLoader is required"),
        ("spec.moduleLoader.container", KeyError, f"{C} is required"),
        (f"{C}.kernelMappings", [], f"{C}.kernelMappings must list at least one mapping"),
        (f"{C}.kernelMappings", KeyError, f"{C}.kernelMappings must list at least one mapping"),
        (f"{C}.kernelMappings", {"regexp": ".*"}, f"{C}.kernelMappings must list at least one mapping"),
        (f"{C}.kernelMappings", ["^.+$"], f"{C}.kernelMappings[0] must be an object"),
        (f"{C}.kernelMappings", [{"literal": K96, "regexp": "^.+$"}],
         f"{C}.kernelMappings[0]: set exactly one of literal or regexp"),
        (f"{C}.kernelMappings", [{"regexp": ".*"}, {"containerImage": "quay.io/acme/x:1"}],
         f"{C}.kernelMappings[1]: set exactly one of literal or regexp"),
        (f"{C}.kernelMappings", [{"literal": ""}], f"{C}.kernelMappings[0]: set exactly one"),
        (f"{C}.kernelMappings", [{"literal": 5.14}], f"{C}.kernelMappings[0].literal must be a string"),
        (f"{C}.kernelMappings", [{"literal": K96}, {"regexp": r"^.+(?=\.x86_64)"}],
         f"{C}.kernelMappings[1].regexp"),
        (f"{C}.kernelMappings", [{"regexp": ".*", "containerImage": 42}],
         f"{C}.kernelMappings[0].containerImage must be a string"),
        (f"{C}.build.buildArgs", [{"name": "A", "value": "x"}, {"name": "KMOD_VERSION", "value": 1.0}],
         f"{C}.build.buildArgs[1].value must be a string"),
        (f"{C}.build.buildArgs", [{"value": "x"}], f"{C}.build.buildArgs[0].name must be a non-empty string"),
        (f"{C}.build.buildArgs", {"KMOD_VERSION": "1"}, f"{C}.build.buildArgs must be a list"),
        (f"{C}.build.secrets", "build-secret", f"{C}.build.secrets must be a list"),
        (f"{C}.build.secrets", [{"name": ""}], f"{C}.build.secrets[0].name must be a non-empty string"),
        (f"{C}.build.dockerfileConfigMap", {}, f"{C}.build.dockerfileConfigMap.name must be a non-empty string"),
        (f"{C}.build.dockerfileConfigMap", "kmm-kmod-dockerfile", f"{C}.build.dockerfileConfigMap must be an object"),
        (f"{C}.build.baseImageRegistryTLS", {"insecure": "true"}, f"{C}.build.baseImageRegistryTLS.insecure"),
        (f"{C}.build.selector", {"kubernetes.io/arch": 64}, f"{C}.build.selector must map label names"),
        (f"{C}.registryTLS", {"insecureSkipTLSVerify": "yes"}, f"{C}.registryTLS.insecureSkipTLSVerify"),
        (f"{C}.containerImage", ["quay.io/acme/x"], f"{C}.containerImage must be a string"),
        ("spec.imageRepoSecret", {"name": None}, "spec.imageRepoSecret.name must be a non-empty string"),
        ("spec.imageRebuildTriggerGeneration", "2", "spec.imageRebuildTriggerGeneration must be an integer"),
        ("spec.imageRebuildTriggerGeneration", True, "spec.imageRebuildTriggerGeneration must be an integer"),
    ],
)
def test_parse_errors_name_the_field(path, value, expected):
    raw = _set(module_dict(), path, value)
    with pytest.raises(ModuleError) as excinfo:
        parse_module(raw)
    assert expected in str(excinfo.value)


def test_bad_regexp_error_quotes_pattern_and_re2_reason():
    raw = module_dict(kernelMappings=[{"literal": K96}, {"regexp": r"(el9)_\1"}])
    with pytest.raises(ModuleError) as excinfo:
        parse_module(raw)
    message = str(excinfo.value)
    assert f"{C}.kernelMappings[1].regexp" in message
    assert r"'(el9)_\\1'" in message or r"(el9)_\1" in message
    assert "invalid escape sequence" in message


def test_mapping_build_errors_name_the_mapping():
    raw = module_dict(kernelMappings=[
        {"regexp": ".*", "build": {"buildArgs": [{"name": "N", "value": 3}]}}
    ])
    with pytest.raises(ModuleError, match=r"kernelMappings\[0\]\.build\.buildArgs\[0\]\.value"):
        parse_module(raw)


def test_module_error_is_a_value_error():
    assert issubclass(ModuleError, ValueError)


# -- mapping selection ---------------------------------------------------------------------------

def test_first_match_wins():
    m = parse_module(module_dict(kernelMappings=[
        {"regexp": r"^5\.14\.0-570\.", "containerImage": "quay.io/acme/first:${KERNEL_VERSION}"},
        {"regexp": r"^.+\.el9_\d+\.x86_64$", "containerImage": "quay.io/acme/second:${KERNEL_VERSION}"},
        {"literal": K96, "containerImage": "quay.io/acme/third:${KERNEL_VERSION}"},
    ]))
    assert m.mapping_for(K96).index == 0
    assert m.mapping_for(K96_64K).index == 0
    assert m.mapping_for("5.14.0-427.28.1.el9_4.x86_64").index == 1
    assert m.mapping_for(K84) is None
    assert target_for(m, K96).image == f"quay.io/acme/first:{K96}"


def test_literal_is_exact_not_a_pattern_nor_a_prefix():
    m = parse_module(module_dict(kernelMappings=[{"literal": K96}]))
    assert m.mapping_for(K96) is not None
    assert m.mapping_for(K96 + "+rt") is None
    assert m.mapping_for("5.14.0-570.27.1.el9_6.x86_6") is None
    dotted = parse_module(module_dict(kernelMappings=[{"literal": "5.14.0-570.27.1.el9_6.x86.64"}]))
    assert dotted.mapping_for("5.14.0-570.27.1.el9_6.x86_64") is None  # '.' is not a wildcard


def test_regexp_is_unanchored():
    m = parse_module(module_dict(kernelMappings=[{"regexp": "el9_6"}]))
    assert m.mapping_for(K96) is not None
    assert m.mapping_for(K84) is None


def test_no_mapping_gives_no_target():
    m = parse_module(module_dict(kernelMappings=[{"literal": K84}]))
    assert target_for(m, K96) is None


def test_selects_by_labels():
    m = parse_module(module_dict())
    assert m.selects({"node-role.kubernetes.io/worker": "", "kubernetes.io/hostname": "worker-0"})
    assert not m.selects({"node-role.kubernetes.io/master": ""})
    assert not m.selects({"node-role.kubernetes.io/worker": "true"})
    assert not m.selects(None)
    raw = module_dict()
    raw["spec"]["selector"] = {}
    assert parse_module(raw).selects(None)


# -- containerImage templating --------------------------------------------------------------------

def test_template_variables_for_a_rhel9_kernel():
    m = parse_module(module_dict())
    assert template_variables(m, K96) == {
        "KERNEL_FULL_VERSION": K96,
        "KERNEL_VERSION": K96,
        "KERNEL_XYZ": "5.14.0",
        "KERNEL_X": "5",
        "KERNEL_Y": "14",
        "KERNEL_Z": "0",
        "MOD_NAME": "kmm-ci-a",
        "MOD_NAMESPACE": "kmm-tests",
    }


def test_every_template_variable_is_substituted():
    template = ("quay.io/${MOD_NAMESPACE}/${MOD_NAME}:${KERNEL_X}.${KERNEL_Y}.${KERNEL_Z}-${KERNEL_XYZ}"
                "-${KERNEL_VERSION}-${KERNEL_FULL_VERSION}")
    m = parse_module(module_dict(containerImage=template))
    target = target_for(m, K96)
    assert target.image == f"quay.io/kmm-tests/kmm-ci-a:5.14.0-5.14.0-{K96}-{K96}"
    assert "$" not in target.image


def test_bare_dollar_variables_are_substituted():
    m = parse_module(module_dict(containerImage="quay.io/acme/$MOD_NAME:$KERNEL_FULL_VERSION"))
    assert target_for(m, K96).image == f"quay.io/acme/kmm-ci-a:{K96}"


def test_mapping_container_image_overrides_the_container_one():
    m = parse_module(module_dict(kernelMappings=[
        {"regexp": r"\+rt$", "containerImage": "quay.io/acme/kmm-kmod-rt:${KERNEL_XYZ}"},
        {"regexp": ".*"},
    ]))
    assert target_for(m, K94_RT).image == "quay.io/acme/kmm-kmod-rt:5.14.0"
    assert target_for(m, K96).image == f"quay.io/acme/kmm-kmod:{K96}"


def test_unknown_variable_is_an_error_naming_field_and_variable():
    m = parse_module(module_dict(containerImage="quay.io/acme/kmm-kmod:${KERNEL_RELEASE}"))
    with pytest.raises(ModuleError) as excinfo:
        target_for(m, K96)
    message = str(excinfo.value)
    assert "${KERNEL_RELEASE}" in message
    assert f"{C}.containerImage" in message
    assert "${KERNEL_FULL_VERSION}" in message  # the known ones are listed


def test_unknown_variable_in_mapping_names_the_mapping():
    m = parse_module(module_dict(kernelMappings=[{"regexp": ".*", "containerImage": "quay.io/x:$ARCH"}]))
    with pytest.raises(ModuleError, match=r"kernelMappings\[0\]\.containerImage.*\$\{ARCH\}"):
        target_for(m, K96)


def test_missing_container_image_is_an_error_at_parse_time():
    with pytest.raises(ModuleError, match=rf"^{C}\.kernelMappings\[0\] has no containerImage"):
        parse_module(module_dict(containerImage=None))


@pytest.mark.parametrize("template", ["", "quay.io/acme/kmm kmod:${KERNEL_X}"])
def test_image_that_is_not_a_reference_is_an_error(template):
    with pytest.raises(ModuleError, match="not an image reference"):
        render_image(template, {"KERNEL_X": "5"}, f"{C}.containerImage")


# -- build merge ---------------------------------------------------------------------------------

def test_build_merge_mapping_wins_args_by_name_secrets_append():
    m = parse_module(module_dict(
        build={
            "dockerfileConfigMap": {"name": "container-dockerfile"},
            "buildArgs": [{"name": "KMOD_VERSION", "value": "1.0.2"}, {"name": "ARCH", "value": "x86_64"}],
            "secrets": [{"name": "s1"}, {"name": "s2"}],
            "baseImageRegistryTLS": {"insecure": True},
        },
        kernelMappings=[{
            "regexp": ".*",
            "build": {
                "dockerfileConfigMap": {"name": "mapping-dockerfile"},
                "buildArgs": [{"name": "ARCH", "value": "aarch64"}, {"name": "EXTRA", "value": "1"}],
                "secrets": [{"name": "s2"}, {"name": "s3"}],
            },
        }],
    ))
    build = target_for(m, K96).build
    assert build.dockerfile_configmap == "mapping-dockerfile"
    assert dict(build.build_args) == {"KMOD_VERSION": "1.0.2", "ARCH": "aarch64", "EXTRA": "1"}
    assert build.secrets == ("s1", "s2", "s3")
    assert build.base_image_registry_tls == RegistryTLS(insecure=True)


def test_plus_kernel_with_a_tag_safe_template_is_fine():
    m = parse_module(module_dict(kernelMappings=[{"regexp": r"\+rt$",
                                                  "containerImage": "reg/org/kmod-rt:${KERNEL_XYZ}"}]))
    assert target_for(m, "5.14.0-427.68.1.el9_4.x86_64+rt").image == "reg/org/kmod-rt:5.14.0"


def test_build_merge_keeps_container_configmap_when_mapping_has_none():
    m = parse_module(module_dict(kernelMappings=[
        {"regexp": ".*", "build": {"buildArgs": [{"name": "KMOD_VERSION", "value": "2.0.0"}]}},
    ]))
    build = target_for(m, K96).build
    assert build.dockerfile_configmap == "kmm-kmod-dockerfile"
    assert dict(build.build_args) == {"KMOD_VERSION": "2.0.0"}
    assert build.secrets == ("build-secret",)


def test_mapping_only_build():
    m = parse_module(module_dict(build=None, kernelMappings=[
        {"literal": K96, "build": {"dockerfileConfigMap": {"name": "only-here"}}},
        {"literal": K84},
    ]))
    assert target_for(m, K96).build.dockerfile_configmap == "only-here"
    assert target_for(m, K84).build is None


def test_duplicate_secrets_in_one_list_are_dropped():
    m = parse_module(module_dict(build={"secrets": [{"name": "a"}, {"name": "b"}, {"name": "a"}]}))
    assert m.build.secrets == ("a", "b")


def test_build_selector_merge():
    base = BuildConfig("cm", selector={"kubernetes.io/arch": "amd64"})
    assert base.merged_with(BuildConfig()).selector == {"kubernetes.io/arch": "amd64"}
    assert base.merged_with(BuildConfig(selector={})).selector == {}
    assert base.merged_with(None) is base


def test_registry_tls_mapping_overrides_container():
    m = parse_module(module_dict(
        registryTLS={"insecure": True},
        kernelMappings=[{"regexp": "el9", "registryTLS": {"insecureSkipTLSVerify": True}}, {"regexp": ".*"}],
    ))
    assert target_for(m, K96).registry_tls == RegistryTLS(insecure_skip_tls_verify=True)
    assert target_for(m, K84).registry_tls == RegistryTLS(insecure=True)


def test_null_selector_is_a_missing_selector():
    raw = module_dict()
    raw["spec"]["selector"] = None
    with pytest.raises(ModuleError, match="spec.selector"):
        parse_module(raw)
