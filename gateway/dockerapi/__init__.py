"""The Docker Engine API, one module per resource family; ROUTES is the whole table."""

from gateway.dockerapi import (
    build,
    containers,
    exec,
    image_transfer,
    images,
    networks,
    system,
    unsupported,
    volumes,
)

ROUTES = [
    *system.ROUTES,
    *containers.ROUTES,
    *exec.ROUTES,
    *images.ROUTES,
    *image_transfer.ROUTES,
    *build.ROUTES,
    *networks.ROUTES,
    *volumes.ROUTES,
    *unsupported.ROUTES,
]

STREAMING_ROUTES = [route for route in ROUTES if route.streaming]
