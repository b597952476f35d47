//! Each case builds a Pod, runs `mutate`, applies the patch with the json-patch crate and looks at
//! the resulting Pod. Fixture names in comments are upstream's `pkg/handler/testdata` files.

use super::*;
use serde_json::json;

const ROLE: &str = "arn:aws:iam::111122223333:role/s3-reader";
const IRSA_TOKEN: &str = "/var/run/secrets/eks.amazonaws.com/serviceaccount/token";
const IRSA_MOUNT: &str = "/var/run/secrets/eks.amazonaws.com/serviceaccount";
const CC_TOKEN: &str =
    "/var/run/secrets/pods.eks.amazonaws.com/serviceaccount/eks-pod-identity-token";
const CC_MOUNT: &str = "/var/run/secrets/pods.eks.amazonaws.com/serviceaccount";

fn pod(v: Value) -> Pod {
    serde_json::from_value(v).unwrap()
}

fn simple_pod() -> Pod {
    pod(json!({
        "metadata": {"name": "balajilovesoreos"},
        "spec": {"serviceAccountName": "default", "containers": [{"name": "app", "image": "amazonlinux"}]}
    }))
}

/// Patch the pod's JSON (not the typed struct), as the API server does.
fn apply_json(doc: &Value, identity: &Identity, cfg: &Config) -> Value {
    let ops = mutate(&pod(doc.clone()), identity, cfg);
    let mut out = doc.clone();
    json_patch::patch(&mut out, &ops).unwrap();
    out
}

fn apply(p: &Pod, identity: &Identity, cfg: &Config) -> Pod {
    let ops = mutate(p, identity, cfg);
    let mut doc = serde_json::to_value(p).unwrap();
    json_patch::patch(&mut doc, &ops).unwrap();
    let out: Pod = serde_json::from_value(doc).unwrap();
    // Reinvocation (reinvocationPolicy IfNeeded) must be a no-op.
    assert!(
        mutate(&out, identity, cfg).is_empty(),
        "second pass should not patch"
    );
    out
}

/// A simple pod with the `token-expiration` pod annotation.
fn expiring_pod(seconds: &str) -> Pod {
    with_annotations(
        simple_pod(),
        &[("eks.amazonaws.com/token-expiration", seconds)],
    )
}

fn irsa() -> Identity {
    Identity::web_identity(ROLE)
}

fn env(c: &Container) -> Vec<(String, String)> {
    c.env
        .iter()
        .flatten()
        .map(|e| (e.name.clone(), e.value.clone().unwrap_or_default()))
        .collect()
}

fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
    v.iter()
        .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
        .collect()
}

fn containers(p: &Pod) -> &[Container] {
    &p.spec.as_ref().unwrap().containers
}

fn init_containers(p: &Pod) -> &[Container] {
    p.spec.as_ref().unwrap().init_containers.as_deref().unwrap()
}

fn volumes(p: &Pod) -> &[Volume] {
    p.spec
        .as_ref()
        .unwrap()
        .volumes
        .as_deref()
        .unwrap_or_default()
}

fn token(v: &Volume) -> &ServiceAccountTokenProjection {
    v.projected.as_ref().unwrap().sources.as_ref().unwrap()[0]
        .service_account_token
        .as_ref()
        .unwrap()
}

fn mounts(c: &Container) -> Vec<(String, String, Option<bool>)> {
    c.volume_mounts
        .iter()
        .flatten()
        .map(|m| (m.name.clone(), m.mount_path.clone(), m.read_only))
        .collect()
}

fn with_annotations(mut p: Pod, a: &[(&str, &str)]) -> Pod {
    p.metadata.annotations = Some(
        a.iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
    );
    p
}

// === IRSA: env, volume, mount ===

#[test]
fn irsa_adds_env_volume_and_mount() {
    // rawPodWithoutVolumes
    let out = apply(&simple_pod(), &irsa(), &Config::default());
    let c = &containers(&out)[0];
    assert_eq!(
        env(c),
        pairs(&[
            ("AWS_ROLE_ARN", ROLE),
            ("AWS_WEB_IDENTITY_TOKEN_FILE", IRSA_TOKEN)
        ])
    );
    assert_eq!(
        mounts(c),
        vec![(
            "aws-iam-token".to_owned(),
            IRSA_MOUNT.to_owned(),
            Some(true)
        )]
    );
    let vols = volumes(&out);
    assert_eq!(vols.len(), 1);
    assert_eq!(vols[0].name, "aws-iam-token");
    let t = token(&vols[0]);
    assert_eq!(t.audience.as_deref(), Some("sts.amazonaws.com"));
    assert_eq!(t.expiration_seconds, Some(86_400));
    assert_eq!(t.path, "token");
    assert!(out.metadata.labels.is_none(), "IRSA does not label the pod");
}

#[test]
fn env_is_appended_after_user_env() {
    let p = pod(
        json!({"spec": {"containers": [{"name": "app", "env": [{"name": "FOO", "value": "bar"}]}]}}),
    );
    let out = apply(&p, &irsa(), &Config::default());
    assert_eq!(
        env(&containers(&out)[0]),
        pairs(&[
            ("FOO", "bar"),
            ("AWS_ROLE_ARN", ROLE),
            ("AWS_WEB_IDENTITY_TOKEN_FILE", IRSA_TOKEN)
        ])
    );
}

#[test]
fn env_order_sts_then_regions_then_identity() {
    // rawPodNeedsRegion + rawPodNeedsSTS
    let cfg = Config {
        aws_default_region: "cn-north-1".into(),
        sts_regional_endpoint: true,
        ..Config::default()
    };
    let out = apply(&simple_pod(), &irsa(), &cfg);
    assert_eq!(
        env(&containers(&out)[0]),
        pairs(&[
            ("AWS_STS_REGIONAL_ENDPOINTS", "regional"),
            ("AWS_DEFAULT_REGION", "cn-north-1"),
            ("AWS_REGION", "cn-north-1"),
            ("AWS_ROLE_ARN", ROLE),
            ("AWS_WEB_IDENTITY_TOKEN_FILE", IRSA_TOKEN),
        ])
    );
}

#[test]
fn sts_annotation_true_beats_flag_false() {
    let id = Identity {
        regional_sts: Some(true),
        ..irsa()
    };
    let out = apply(&simple_pod(), &id, &Config::default());
    assert_eq!(
        env(&containers(&out)[0])[0],
        ("AWS_STS_REGIONAL_ENDPOINTS".into(), "regional".into())
    );
}

#[test]
fn sts_annotation_false_beats_flag_true() {
    // rawPodNoSTSAnnotationOverride
    let id = Identity {
        regional_sts: Some(false),
        ..irsa()
    };
    let cfg = Config {
        sts_regional_endpoint: true,
        ..Config::default()
    };
    let out = apply(&simple_pod(), &id, &cfg);
    assert!(
        env(&containers(&out)[0])
            .iter()
            .all(|(k, _)| k != "AWS_STS_REGIONAL_ENDPOINTS")
    );
}

#[test]
fn one_identity_var_present_blocks_both() {
    for name in ["AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE"] {
        let p = pod(
            json!({"spec": {"containers": [{"name": "app", "env": [{"name": name, "value": "mine"}]}]}}),
        );
        let out = apply(&p, &irsa(), &Config::default());
        assert_eq!(
            env(&containers(&out)[0]),
            pairs(&[(name, "mine")]),
            "user {name} must win"
        );
        // The mount is still added: the token file is what the user var most likely points at.
        assert_eq!(mounts(&containers(&out)[0]).len(), 1);
    }
}

#[test]
fn one_region_var_present_blocks_both() {
    // rawPodRegionPresent
    let cfg = Config {
        aws_default_region: "us-west-2".into(),
        ..Config::default()
    };
    for name in ["AWS_REGION", "AWS_DEFAULT_REGION"] {
        let p = pod(
            json!({"spec": {"containers": [{"name": "app", "env": [{"name": name, "value": "eu-west-1"}]}]}}),
        );
        let out = apply(&p, &irsa(), &cfg);
        assert_eq!(
            env(&containers(&out)[0]),
            pairs(&[
                (name, "eu-west-1"),
                ("AWS_ROLE_ARN", ROLE),
                ("AWS_WEB_IDENTITY_TOKEN_FILE", IRSA_TOKEN)
            ])
        );
    }
}

#[test]
fn sts_var_present_is_kept() {
    // rawPodHasSTS
    let p = pod(
        json!({"spec": {"containers": [{"name": "app", "env": [{"name": "AWS_STS_REGIONAL_ENDPOINTS", "value": "legacy"}]}]}}),
    );
    let cfg = Config {
        sts_regional_endpoint: true,
        ..Config::default()
    };
    let out = apply(&p, &irsa(), &cfg);
    assert_eq!(
        env(&containers(&out)[0]),
        pairs(&[
            ("AWS_STS_REGIONAL_ENDPOINTS", "legacy"),
            ("AWS_ROLE_ARN", ROLE),
            ("AWS_WEB_IDENTITY_TOKEN_FILE", IRSA_TOKEN)
        ])
    );
}

#[test]
fn container_with_all_vars_still_gets_the_mount() {
    // rawPodHasAll: upstream skips the volumeMount here (its early return); we always mount.
    let p = pod(json!({"spec": {"containers": [{"name": "app", "env": [
        {"name": "AWS_REGION", "value": "cn-northwest-1"},
        {"name": "AWS_STS_REGIONAL_ENDPOINTS", "value": "regional"},
        {"name": "AWS_ROLE_ARN", "value": "arn:aws-cn:iam::111122223333:role/s3-reader"}
    ]}]}}));
    let cfg = Config {
        aws_default_region: "cn-north-1".into(),
        sts_regional_endpoint: true,
        token_expiration: 3600,
        ..Config::default()
    };
    let out = apply(
        &p,
        &Identity::web_identity("arn:aws-cn:iam::111122223333:role/s3-reader"),
        &cfg,
    );
    let c = &containers(&out)[0];
    assert_eq!(env(c).len(), 3, "no env added");
    assert_eq!(
        mounts(c),
        vec![(
            "aws-iam-token".to_owned(),
            IRSA_MOUNT.to_owned(),
            Some(true)
        )]
    );
    assert_eq!(token(&volumes(&out)[0]).expiration_seconds, Some(3600));
}

// === audience and expiration precedence ===

#[test]
fn audience_annotation_beats_flag() {
    let id = Identity {
        audience: Some("my-aud".into()),
        ..irsa()
    };
    let cfg = Config {
        token_audience: "flag-aud".into(),
        ..Config::default()
    };
    let out = apply(&simple_pod(), &id, &cfg);
    assert_eq!(token(&volumes(&out)[0]).audience.as_deref(), Some("my-aud"));
}

#[test]
fn audience_flag_is_the_default() {
    let cfg = Config {
        token_audience: "flag-aud".into(),
        ..Config::default()
    };
    let out = apply(&simple_pod(), &irsa(), &cfg);
    assert_eq!(
        token(&volumes(&out)[0]).audience.as_deref(),
        Some("flag-aud")
    );
}

#[test]
fn empty_audience_means_api_server_default() {
    // ConfigMap entries without Audience are not defaulted: the projection has no audience.
    let id = Identity {
        audience: Some(String::new()),
        ..irsa()
    };
    let doc = apply_json(
        &serde_json::to_value(simple_pod()).unwrap(),
        &id,
        &Config::default(),
    );
    let sat = &doc["spec"]["volumes"][0]["projected"]["sources"][0]["serviceAccountToken"];
    assert!(sat.get("audience").is_none(), "{sat}");
}

#[test]
fn expiration_flag_is_the_default() {
    let cfg = Config {
        token_expiration: 7200,
        ..Config::default()
    };
    let out = apply(&simple_pod(), &irsa(), &cfg);
    assert_eq!(token(&volumes(&out)[0]).expiration_seconds, Some(7200));
}

#[test]
fn expiration_sa_annotation_beats_flag() {
    let id = Identity {
        token_expiration: Some(10_000),
        ..irsa()
    };
    let cfg = Config {
        token_expiration: 7200,
        ..Config::default()
    };
    let out = apply(&simple_pod(), &id, &cfg);
    assert_eq!(token(&volumes(&out)[0]).expiration_seconds, Some(10_000));
}

#[test]
fn expiration_pod_annotation_beats_sa_annotation() {
    // rawPodHasTokenExpiration
    let p = expiring_pod("3600");
    let id = Identity {
        token_expiration: Some(10_000),
        ..irsa()
    };
    let out = apply(&p, &id, &Config::default());
    assert_eq!(token(&volumes(&out)[0]).expiration_seconds, Some(3600));
}

#[test]
fn expiration_invalid_pod_annotation_falls_back() {
    for bad in ["abc", "", "1h", " 3600", "3600.0"] {
        let p = expiring_pod(bad);
        let id = Identity {
            token_expiration: Some(10_000),
            ..irsa()
        };
        let out = apply(&p, &id, &Config::default());
        assert_eq!(
            token(&volumes(&out)[0]).expiration_seconds,
            Some(10_000),
            "{bad:?}"
        );
    }
}

#[test]
fn expiration_pod_annotation_is_raised_to_600() {
    // rawPodMinTokenExpiration; MaxTokenExpiration is not enforced.
    for (given, want) in [
        ("0", 600),
        ("-5", 600),
        ("599", 600),
        ("+601", 601),
        ("200000", 200_000),
    ] {
        let p = with_annotations(
            simple_pod(),
            &[("eks.amazonaws.com/token-expiration", given)],
        );
        let out = apply(&p, &irsa(), &Config::default());
        assert_eq!(
            token(&volumes(&out)[0]).expiration_seconds,
            Some(want),
            "{given}"
        );
    }
}

#[test]
fn irsa_default_expiration_has_no_jitter() {
    let id = Identity {
        expiration_jitter: 1234,
        ..irsa()
    };
    let out = apply(&simple_pod(), &id, &Config::default());
    assert_eq!(token(&volumes(&out)[0]).expiration_seconds, Some(86_400));
}

// === volumes and mounts ===

#[test]
fn volume_is_prepended_to_existing_volumes() {
    // rawPodWithVolumes: `add /spec/volumes/0`
    let p = pod(
        json!({"spec": {"containers": [{"name": "app"}], "volumes": [{"name": "data", "emptyDir": {}}]}}),
    );
    let out = apply(&p, &irsa(), &Config::default());
    let names: Vec<_> = volumes(&out).iter().map(|v| v.name.as_str()).collect();
    assert_eq!(names, ["aws-iam-token", "data"]);
}

#[test]
fn empty_volume_list_gets_the_volume() {
    let p = pod(json!({"spec": {"containers": [{"name": "app"}], "volumes": []}}));
    let out = apply(&p, &irsa(), &Config::default());
    assert_eq!(volumes(&out).len(), 1);
}

#[test]
fn same_named_volume_is_left_alone() {
    // Existence is by name only, even for a hostPath volume.
    let p = pod(json!({"spec": {"containers": [{"name": "app"}],
        "volumes": [{"name": "aws-iam-token", "hostPath": {"path": "/tmp/token"}}]}}));
    let out = apply(&p, &irsa(), &Config::default());
    assert_eq!(volumes(&out).len(), 1);
    assert!(volumes(&out)[0].host_path.is_some());
    assert_eq!(env(&containers(&out)[0]).len(), 2);
}

#[test]
fn same_named_mount_keeps_its_path() {
    // rawPodHasVolumeMount
    let p = pod(json!({"spec": {"containers": [{"name": "app",
        "volumeMounts": [{"name": "aws-iam-token", "mountPath": "/some/other/path", "readOnly": true}]}]}}));
    let out = apply(&p, &irsa(), &Config::default());
    assert_eq!(
        mounts(&containers(&out)[0]),
        vec![(
            "aws-iam-token".to_owned(),
            "/some/other/path".to_owned(),
            Some(true)
        )]
    );
}

#[test]
fn mount_is_appended_after_user_mounts() {
    let p = pod(json!({"spec": {"containers": [{"name": "app",
        "volumeMounts": [{"name": "data", "mountPath": "/data"}]}]}}));
    let out = apply(&p, &irsa(), &Config::default());
    let names: Vec<_> = mounts(&containers(&out)[0])
        .into_iter()
        .map(|m| m.0)
        .collect();
    assert_eq!(names, ["data", "aws-iam-token"]);
}

#[test]
fn custom_mount_path_is_cleaned_like_go() {
    let cfg = Config {
        token_mount_path: "/custom//path/./sa/".into(),
        ..Config::default()
    };
    let out = apply(&simple_pod(), &irsa(), &cfg);
    let c = &containers(&out)[0];
    assert_eq!(env(c)[1].1, "/custom/path/sa/token");
    assert_eq!(
        mounts(c)[0].1,
        "/custom//path/./sa/",
        "mountPath is the flag as given"
    );
}

// === containers: init, sidecars, skip, ephemeral ===

#[test]
fn init_containers_are_mutated() {
    // rawPodWithInitContainer / initPodNeedsRegion
    let p = pod(
        json!({"spec": {"initContainers": [{"name": "init"}], "containers": [{"name": "app"}]}}),
    );
    let cfg = Config {
        aws_default_region: "us-east-1".into(),
        ..Config::default()
    };
    let out = apply(&p, &irsa(), &cfg);
    for c in [&init_containers(&out)[0], &containers(&out)[0]] {
        assert_eq!(env(c).len(), 4, "{}", c.name);
        assert_eq!(mounts(c).len(), 1);
    }
}

#[test]
fn native_sidecars_are_mutated() {
    let p = pod(
        json!({"spec": {"initContainers": [{"name": "proxy", "restartPolicy": "Always"}], "containers": [{"name": "app"}]}}),
    );
    let out = apply(&p, &irsa(), &Config::default());
    let sidecar = &init_containers(&out)[0];
    assert_eq!(sidecar.restart_policy.as_deref(), Some("Always"));
    assert_eq!(env(sidecar)[0].0, "AWS_ROLE_ARN");
}

#[test]
fn skip_containers_applies_to_init_and_regular() {
    // rawPodSkip
    let p = with_annotations(
        pod(
            json!({"spec": {"initContainers": [{"name": "init"}, {"name": "init2"}],
            "containers": [{"name": "app"}, {"name": "sidecar"}]}}),
        ),
        &[("eks.amazonaws.com/skip-containers", "init,sidecar")],
    );
    let out = apply(&p, &irsa(), &Config::default());
    assert!(
        init_containers(&out)[0].env.is_none() && init_containers(&out)[0].volume_mounts.is_none()
    );
    assert_eq!(env(&init_containers(&out)[1]).len(), 2);
    assert_eq!(env(&containers(&out)[0]).len(), 2);
    assert!(containers(&out)[1].env.is_none());
    // The volume is still added, as upstream.
    assert_eq!(volumes(&out).len(), 1);
}

#[test]
fn skip_containers_is_one_csv_record() {
    let p = with_annotations(
        pod(json!({"spec": {"containers": [{"name": "a,b"}, {"name": "c"}, {"name": "d"}]}})),
        &[("eks.amazonaws.com/skip-containers", "\"a,b\",c\nd")],
    );
    let out = apply(&p, &irsa(), &Config::default());
    let mutated: Vec<_> = containers(&out).iter().map(|c| c.env.is_some()).collect();
    // Only the first record counts, so `d` (second line) is mutated.
    assert_eq!(mutated, [false, false, true]);
}

#[test]
fn skip_containers_parse_error_skips_nothing() {
    let p = with_annotations(
        pod(json!({"spec": {"containers": [{"name": "app"}]}})),
        &[("eks.amazonaws.com/skip-containers", "app,\"unterminated")],
    );
    let out = apply(&p, &irsa(), &Config::default());
    assert!(containers(&out)[0].env.is_some());
}

#[test]
fn ephemeral_containers_are_not_touched() {
    let p = pod(
        json!({"spec": {"containers": [{"name": "app"}], "ephemeralContainers": [{"name": "debug"}]}}),
    );
    let out = apply(&p, &irsa(), &Config::default());
    assert!(
        out.spec
            .as_ref()
            .unwrap()
            .ephemeral_containers
            .as_ref()
            .unwrap()[0]
            .env
            .is_none()
    );
}

#[test]
fn every_container_is_mutated() {
    let p = pod(
        json!({"spec": {"containers": [{"name": "a"}, {"name": "b", "env": []}, {"name": "c"}]}}),
    );
    let out = apply(&p, &irsa(), &Config::default());
    assert!(
        containers(&out)
            .iter()
            .all(|c| env(c).len() == 2 && mounts(c).len() == 1)
    );
}

// === Windows ===

#[test]
fn windows_node_selector_uses_windows_token_path() {
    // windowsPodWithoutVolumes
    let p = pod(
        json!({"spec": {"nodeSelector": {"kubernetes.io/os": "windows"}, "containers": [{"name": "app"}]}}),
    );
    let out = apply(&p, &irsa(), &Config::default());
    let c = &containers(&out)[0];
    assert_eq!(
        env(c)[1].1,
        r"C:\var\run\secrets\eks.amazonaws.com\serviceaccount\token"
    );
    assert_eq!(mounts(c)[0].1, IRSA_MOUNT, "mountPath stays unix");
}

#[test]
fn windows_beta_node_selector() {
    // betaWindowsPodWithoutVolumes
    let p = pod(
        json!({"spec": {"nodeSelector": {"beta.kubernetes.io/os": "windows"}, "containers": [{"name": "app"}]}}),
    );
    let out = apply(&p, &irsa(), &Config::default());
    assert!(env(&containers(&out)[0])[1].1.starts_with(r"C:\var\run"));
}

fn affinity_pod(terms: Value) -> Pod {
    pod(
        json!({"spec": {"containers": [{"name": "app"}], "affinity": {"nodeAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": terms}}}}}),
    )
}

#[test]
fn windows_required_node_affinity() {
    // Our fix for upstream #57: required node affinity on kubernetes.io/os counts too.
    let p = affinity_pod(json!([{"matchExpressions": [
        {"key": "kubernetes.io/arch", "operator": "In", "values": ["amd64"]},
        {"key": "kubernetes.io/os", "operator": "In", "values": ["windows"]}]}]));
    let out = apply(&p, &irsa(), &Config::default());
    assert_eq!(
        env(&containers(&out)[0])[1].1,
        r"C:\var\run\secrets\eks.amazonaws.com\serviceaccount\token"
    );
}

#[test]
fn affinity_that_allows_linux_is_not_windows() {
    let cases = [
        json!([{"matchExpressions": [{"key": "kubernetes.io/os", "operator": "In", "values": ["windows", "linux"]}]}]),
        json!([{"matchExpressions": [{"key": "kubernetes.io/os", "operator": "In", "values": ["windows"]}]},
               {"matchExpressions": [{"key": "kubernetes.io/arch", "operator": "In", "values": ["amd64"]}]}]),
        json!([{"matchExpressions": [{"key": "kubernetes.io/os", "operator": "NotIn", "values": ["windows"]}]}]),
    ];
    for terms in cases {
        let out = apply(&affinity_pod(terms.clone()), &irsa(), &Config::default());
        assert_eq!(env(&containers(&out)[0])[1].1, IRSA_TOKEN, "{terms}");
    }
}

#[test]
fn preferred_affinity_is_not_windows() {
    let p = pod(
        json!({"spec": {"containers": [{"name": "app"}], "affinity": {"nodeAffinity": {
        "preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 1, "preference": {"matchExpressions": [
            {"key": "kubernetes.io/os", "operator": "In", "values": ["windows"]}]}}]}}}}),
    );
    let out = apply(&p, &irsa(), &Config::default());
    assert_eq!(env(&containers(&out)[0])[1].1, IRSA_TOKEN);
}

// === annotation prefix ===

#[test]
fn annotation_prefix_applies_to_pod_annotations() {
    let cfg = Config {
        annotation_prefix: "example.com".into(),
        ..Config::default()
    };
    let p = with_annotations(
        pod(json!({"spec": {"containers": [{"name": "app"}, {"name": "skipme"}]}})),
        &[
            ("example.com/token-expiration", "4000"),
            ("example.com/skip-containers", "skipme"),
            ("eks.amazonaws.com/token-expiration", "5000"),
        ],
    );
    let out = apply(&p, &irsa(), &cfg);
    assert_eq!(token(&volumes(&out)[0]).expiration_seconds, Some(4000));
    assert!(containers(&out)[1].env.is_none());
}

// === Pod Identity (container credentials) ===

#[test]
fn container_credentials_env_volume_label() {
    let out = apply(
        &simple_pod(),
        &Identity::container_credentials(),
        &Config::default(),
    );
    let c = &containers(&out)[0];
    assert_eq!(
        env(c),
        pairs(&[
            (
                "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                "http://169.254.170.23/v1/credentials"
            ),
            ("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", CC_TOKEN),
        ])
    );
    assert_eq!(
        mounts(c),
        vec![(
            "eks-pod-identity-token".to_owned(),
            CC_MOUNT.to_owned(),
            Some(true)
        )]
    );
    let v = &volumes(&out)[0];
    assert_eq!(v.name, "eks-pod-identity-token");
    assert_eq!(token(v).audience.as_deref(), Some("pods.eks.amazonaws.com"));
    assert_eq!(token(v).path, "eks-pod-identity-token");
    assert_eq!(token(v).expiration_seconds, Some(86_400), "jitter 0");
    assert_eq!(
        out.metadata
            .labels
            .unwrap()
            .get(POD_IDENTITY_LABEL)
            .map(String::as_str),
        Some("enabled")
    );
}

#[test]
fn container_credentials_label_added_to_existing_labels() {
    let p = pod(
        json!({"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "app"}]}}),
    );
    let out = apply(&p, &Identity::container_credentials(), &Config::default());
    let labels = out.metadata.labels.unwrap();
    assert_eq!(labels.len(), 2);
    assert_eq!(labels["app"], "web");
    assert_eq!(labels[POD_IDENTITY_LABEL], "enabled");
    // The label key is escaped in the JSON pointer.
    let ops = serde_json::to_value(mutate(
        &p,
        &Identity::container_credentials(),
        &Config::default(),
    ))
    .unwrap();
    assert_eq!(
        ops[0]["path"],
        "/metadata/labels/eks.amazonaws.com~1pod-identity"
    );
}

#[test]
fn container_credentials_needs_all_with_flags() {
    // cc/rawPodNeedsAll: custom flags, regional STS and expiration from the SA, region flag.
    let cfg = Config {
        aws_default_region: "cn-north-1".into(),
        container_credentials: ContainerCredentialsConfig {
            audience: "con-creds-aud".into(),
            mount_path: "/con-creds-mount-path".into(),
            volume_name: "con-creds-volume-name".into(),
            token_path: "con-creds-token-path".into(),
            full_uri: "con-creds-uri".into(),
        },
        ..Config::default()
    };
    let id = Identity {
        regional_sts: Some(true),
        token_expiration: Some(10_000),
        ..Identity::container_credentials()
    };
    let out = apply(&simple_pod(), &id, &cfg);
    let c = &containers(&out)[0];
    assert_eq!(
        env(c),
        pairs(&[
            ("AWS_STS_REGIONAL_ENDPOINTS", "regional"),
            ("AWS_DEFAULT_REGION", "cn-north-1"),
            ("AWS_REGION", "cn-north-1"),
            ("AWS_CONTAINER_CREDENTIALS_FULL_URI", "con-creds-uri"),
            (
                "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
                "/con-creds-mount-path/con-creds-token-path"
            ),
        ])
    );
    assert_eq!(
        mounts(c),
        vec![(
            "con-creds-volume-name".to_owned(),
            "/con-creds-mount-path".to_owned(),
            Some(true)
        )]
    );
    let v = &volumes(&out)[0];
    assert_eq!(
        (
            v.name.as_str(),
            token(v).audience.as_deref(),
            token(v).expiration_seconds
        ),
        ("con-creds-volume-name", Some("con-creds-aud"), Some(10_000))
    );
}

#[test]
fn container_credentials_default_expiration_is_jittered() {
    for (jitter, want) in [
        (0, 86_400),
        (1, 86_399),
        (7_200, 79_200),
        (99_999, 79_200),
        (-3, 86_400),
    ] {
        let id = Identity {
            expiration_jitter: jitter,
            ..Identity::container_credentials()
        };
        let out = apply(&simple_pod(), &id, &Config::default());
        assert_eq!(
            token(&volumes(&out)[0]).expiration_seconds,
            Some(want),
            "jitter {jitter}"
        );
    }
}

#[test]
fn container_credentials_other_expirations_are_not_jittered() {
    let p = expiring_pod("3600");
    let id = Identity {
        expiration_jitter: 500,
        ..Identity::container_credentials()
    };
    let out = apply(&p, &id, &Config::default());
    assert_eq!(token(&volumes(&out)[0]).expiration_seconds, Some(3600));
}

#[test]
fn container_credentials_ignore_irsa_vars_and_audience() {
    // cc/rawPodWithRoleArn: a user AWS_ROLE_ARN does not block the CC vars; the SA audience is not used.
    let p = pod(
        json!({"spec": {"containers": [{"name": "app", "env": [{"name": "AWS_ROLE_ARN", "value": ROLE}]}]}}),
    );
    let id = Identity {
        audience: Some("sts.amazonaws.com".into()),
        ..Identity::container_credentials()
    };
    let out = apply(&p, &id, &Config::default());
    let names: Vec<_> = env(&containers(&out)[0]).into_iter().map(|e| e.0).collect();
    assert_eq!(
        names,
        [
            "AWS_ROLE_ARN",
            "AWS_CONTAINER_CREDENTIALS_FULL_URI",
            "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE"
        ]
    );
    assert_eq!(
        token(&volumes(&out)[0]).audience.as_deref(),
        Some("pods.eks.amazonaws.com")
    );
}

#[test]
fn container_credentials_user_var_blocks_both() {
    let p = pod(json!({"spec": {"containers": [{"name": "app", "env": [
        {"name": "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", "value": "/mine"}]}]}}));
    let out = apply(&p, &Identity::container_credentials(), &Config::default());
    assert_eq!(
        env(&containers(&out)[0]),
        pairs(&[("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", "/mine")])
    );
}

#[test]
fn container_credentials_conflicting_mount_kept() {
    // cc/rawPodWithConflictingVolumeMount: name-only checks for the volume and the mount.
    let p = pod(json!({"spec": {
        "containers": [{"name": "app", "volumeMounts": [{"name": "eks-pod-identity-token", "mountPath": "/some/other/path", "readOnly": true}]}],
        "volumes": [{"name": "eks-pod-identity-token", "hostPath": {"path": "token"}}]}}));
    let out = apply(&p, &Identity::container_credentials(), &Config::default());
    let c = &containers(&out)[0];
    assert_eq!(env(c).len(), 2);
    assert_eq!(mounts(c)[0].1, "/some/other/path");
    assert_eq!(volumes(&out).len(), 1);
}

#[test]
fn container_credentials_windows_token_path() {
    let p = pod(
        json!({"spec": {"nodeSelector": {"kubernetes.io/os": "windows"}, "containers": [{"name": "app"}]}}),
    );
    let out = apply(&p, &Identity::container_credentials(), &Config::default());
    assert_eq!(
        env(&containers(&out)[0])[1].1,
        r"C:\var\run\secrets\pods.eks.amazonaws.com\serviceaccount\eks-pod-identity-token"
    );
}

// === patch shape ===

#[test]
fn fully_mutated_pod_gets_no_patch() {
    let once = apply(&simple_pod(), &irsa(), &Config::default());
    assert!(mutate(&once, &irsa(), &Config::default()).is_empty());
    let cc = apply(
        &simple_pod(),
        &Identity::container_credentials(),
        &Config::default(),
    );
    assert!(mutate(&cc, &Identity::container_credentials(), &Config::default()).is_empty());
}

#[test]
fn reinvocation_mutates_a_container_added_later() {
    let once = apply(&simple_pod(), &irsa(), &Config::default());
    let mut doc = serde_json::to_value(&once).unwrap();
    doc["spec"]["containers"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "istio-proxy"}));
    let out = apply(&pod(doc), &irsa(), &Config::default());
    assert_eq!(env(&containers(&out)[1]).len(), 2);
    assert_eq!(volumes(&out).len(), 1, "volume not added twice");
}

#[test]
fn fields_unknown_to_our_schema_survive() {
    let doc = json!({"spec": {"futureField": {"x": 1}, "containers": [{"name": "app", "futureContainerField": true}]}});
    let out = apply_json(&doc, &irsa(), &Config::default());
    assert_eq!(out["spec"]["futureField"], json!({"x": 1}));
    assert_eq!(
        out["spec"]["containers"][0]["futureContainerField"],
        json!(true)
    );
    assert_eq!(
        out["spec"]["containers"][0]["env"][0]["name"],
        "AWS_ROLE_ARN"
    );
}

#[test]
fn op_order_label_volume_containers_init() {
    let p = pod(
        json!({"metadata": {"labels": {}}, "spec": {"initContainers": [{"name": "i"}], "containers": [{"name": "c"}], "volumes": []}}),
    );
    let ops = serde_json::to_value(mutate(
        &p,
        &Identity::container_credentials(),
        &Config::default(),
    ))
    .unwrap();
    let paths: Vec<_> = ops
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["path"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        paths,
        [
            "/metadata/labels/eks.amazonaws.com~1pod-identity",
            "/spec/volumes/0",
            "/spec/containers/0/env",
            "/spec/containers/0/volumeMounts",
            "/spec/initContainers/0/env",
            "/spec/initContainers/0/volumeMounts",
        ]
    );
}

// === helpers ===

#[test]
fn go_parsers() {
    assert_eq!(parse_go_bool("True"), Some(true));
    assert_eq!(parse_go_bool("0"), Some(false));
    assert_eq!(parse_go_bool("yes"), None);
    assert_eq!(parse_go_int("-12"), Some(-12));
    assert_eq!(parse_go_int("+12"), Some(12));
    assert_eq!(parse_go_int("1_000"), None);
    assert_eq!(parse_go_int("-"), None);
    assert_eq!(
        parse_csv_record("a,\"b\"\"c\",d"),
        Some(vec!["a".into(), "b\"c".into(), "d".into()])
    );
    assert_eq!(parse_csv_record("a\"b"), None);
    assert_eq!(parse_csv_record(""), None);
    assert_eq!(join_path(&["/a/", "b"]), "/a/b");
    assert_eq!(join_path(&["/a/../..", "b"]), "/b");
    assert_eq!(join_path(&["a", "..", ".."]), "..");
}

// === podiam: IRSA through podiam's STS (--sts-endpoint, --ca-bundle-configmap) ===

const PODIAM_STS: &str = "https://podiam.podiam.svc:8443";

fn through_podiam(ca: bool) -> Config {
    Config {
        sts_endpoint: PODIAM_STS.into(),
        ca_bundle: ca.then(|| CaBundle {
            config_map: "podiam-ca".into(),
            key: "bundle.pem".into(),
            mount_path: DEFAULT_CA_BUNDLE_MOUNT_PATH.into(),
        }),
        ..Config::default()
    }
}

#[test]
fn an_sts_endpoint_is_injected_into_irsa_pods() {
    let out = apply(&simple_pod(), &irsa(), &through_podiam(false));
    let c = &containers(&out)[0];
    assert_eq!(
        env(c),
        pairs(&[
            ("AWS_ROLE_ARN", ROLE),
            ("AWS_WEB_IDENTITY_TOKEN_FILE", IRSA_TOKEN),
            ("AWS_ENDPOINT_URL_STS", PODIAM_STS),
        ])
    );
    assert_eq!(volumes(&out).len(), 1, "no CA bundle without the flag");
    assert_eq!(mounts(c).len(), 1);
}

#[test]
fn a_ca_bundle_is_mounted_from_its_config_map_and_named_by_aws_ca_bundle() {
    let out = apply(&simple_pod(), &irsa(), &through_podiam(true));
    let c = &containers(&out)[0];
    let bundle = "/var/run/secrets/podiam/ca/ca-bundle.pem";
    assert_eq!(
        env(c)[2..],
        pairs(&[
            ("AWS_ENDPOINT_URL_STS", PODIAM_STS),
            ("AWS_CA_BUNDLE", bundle),
        ])
    );
    assert_eq!(
        mounts(c),
        vec![
            (
                "aws-iam-token".to_owned(),
                IRSA_MOUNT.to_owned(),
                Some(true)
            ),
            (
                "podiam-ca-bundle".to_owned(),
                "/var/run/secrets/podiam/ca".to_owned(),
                Some(true)
            ),
        ]
    );
    let vols = volumes(&out);
    assert_eq!(vols.len(), 2);
    let cm = vols[1].config_map.as_ref().unwrap();
    assert_eq!(cm.name, "podiam-ca");
    let items = cm.items.as_ref().unwrap();
    assert_eq!(
        (items[0].key.as_str(), items[0].path.as_str()),
        ("bundle.pem", "ca-bundle.pem")
    );

    // A pod with volumes of its own: both are added, the user's kept.
    let p = pod(json!({"spec": {
        "containers": [{"name": "app", "volumeMounts": [{"name": "data", "mountPath": "/data"}]}],
        "volumes": [{"name": "data", "emptyDir": {}}]
    }}));
    let out = apply(&p, &irsa(), &through_podiam(true));
    let names: Vec<&str> = volumes(&out).iter().map(|v| v.name.as_str()).collect();
    assert_eq!(names, ["aws-iam-token", "data", "podiam-ca-bundle"]);
    assert_eq!(mounts(&containers(&out)[0]).len(), 3);
}

#[test]
fn the_service_account_annotation_sets_or_clears_the_sts_endpoint() {
    let annotated = |v: &str| Identity {
        sts_endpoint: Some(v.into()),
        ..irsa()
    };
    // Without the flag, the annotation alone injects it.
    let out = apply(
        &simple_pod(),
        &annotated("https://other:9"),
        &Config::default(),
    );
    assert_eq!(
        env(&containers(&out)[0])[2],
        ("AWS_ENDPOINT_URL_STS".into(), "https://other:9".into())
    );
    // An empty annotation: none, whatever the flags (and so no CA bundle either).
    let out = apply(&simple_pod(), &annotated(""), &through_podiam(true));
    assert_eq!(env(&containers(&out)[0]).len(), 2);
    assert_eq!(volumes(&out).len(), 1);
}

#[test]
fn the_sts_endpoint_leaves_pod_identity_pods_and_user_values_alone() {
    let out = apply(
        &simple_pod(),
        &Identity::container_credentials(),
        &through_podiam(true),
    );
    let c = &containers(&out)[0];
    assert!(
        env(c)
            .iter()
            .all(|(k, _)| k != "AWS_ENDPOINT_URL_STS" && k != "AWS_CA_BUNDLE"),
        "{:?}",
        env(c)
    );
    assert_eq!(volumes(&out).len(), 1);
    // A user's own endpoint and bundle are kept.
    let p = pod(json!({"spec": {"containers": [{"name": "app", "env": [
        {"name": "AWS_ENDPOINT_URL_STS", "value": "https://mine"},
        {"name": "AWS_CA_BUNDLE", "value": "/etc/mine.pem"}
    ]}]}}));
    let out = apply(&p, &irsa(), &through_podiam(true));
    let e = env(&containers(&out)[0]);
    assert_eq!(
        e.iter()
            .filter(|(k, _)| k == "AWS_ENDPOINT_URL_STS")
            .count(),
        1
    );
    assert_eq!(e[0].1, "https://mine");
    assert_eq!(e[1].1, "/etc/mine.pem");
}

#[test]
fn windows_pods_get_a_windows_ca_bundle_path() {
    let p = pod(json!({"spec": {
        "nodeSelector": {"kubernetes.io/os": "windows"},
        "containers": [{"name": "app"}]
    }}));
    let out = apply(&p, &irsa(), &through_podiam(true));
    let e = env(&containers(&out)[0]);
    assert_eq!(
        e.last().unwrap(),
        &(
            "AWS_CA_BUNDLE".to_owned(),
            "C:\\var\\run\\secrets\\podiam\\ca\\ca-bundle.pem".to_owned()
        )
    );
}
