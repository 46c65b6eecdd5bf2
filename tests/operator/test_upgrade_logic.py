"""Which ClusterVersion changes matter to builds ahead of upgrades (pure)."""

from kmm_dtk.operator.upgrade_reconciler import desired_changed, desired_release

RELEASE = "quay.io/openshift-release-dev/ocp-release@sha256:" + "a" * 64


def cv(image=None, **status):
    return {"metadata": {"name": "version"}, "status": {**status, **({"desired": {"image": image}} if image else {})}}


def test_desired_release():
    assert desired_release(cv(RELEASE)) == RELEASE
    assert desired_release(cv()) is None
    assert desired_release(None) is None
    assert desired_release({"status": {"desired": {"image": ""}}}) is None


def test_only_a_new_desired_image_matters():
    assert desired_changed(cv(), cv(RELEASE))
    assert not desired_changed(cv(RELEASE, history=[]), cv(RELEASE, history=[{"state": "Partial"}]))
