"""The design document's cluster, shared by the tests: two RHCOS builds, their kernels and DTKs."""

K84 = "4.18.0-305.49.1.el8_4.x86_64"
K86 = "4.18.0-372.16.1.el8_6.x86_64"
R410 = "410.84.202207140725-0"
R411 = "411.86.202207260413-0"
DTK_410 = ("quay.io/openshift-release-dev/ocp-v4.0-art-dev@"
           "sha256:84edddb4322cfe50d8545c41014a8f5595a4260a20d9a269e144909c5949582b")
DTK_411 = ("registry.ci.openshift.org/ocp/4.11-2022-07-27-013908@"
           "sha256:484c9fe9900020e9b8f5601cbe86d054fe47a6f16e8d9dc6ecbfd58bffd1ad4b")
