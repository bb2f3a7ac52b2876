# syntax=docker/dockerfile:1
# The control plane and the agent are one binary: `kubehero serve` or `kubehero agent` (the Helm charts in
# deploy/helm pass the subcommand as the container's args). Multi-stage: a Rust build, then a distroless runtime
# with no shell, running as the unprivileged user 65532.
FROM rust:1.89-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p kubehero && strip target/release/kubehero

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/kubehero /usr/local/bin/kubehero
USER 65532:65532
EXPOSE 8080 8443
ENTRYPOINT ["/usr/local/bin/kubehero"]
CMD ["serve"]
