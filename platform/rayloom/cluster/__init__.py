"""Ray clusters: job submission (`rayloom submit`, `rayloom jobs`), the local head and fake-GPU
autoscaling cluster (`rayloom cluster`), and rendering of launcher / KubeRay configs."""
