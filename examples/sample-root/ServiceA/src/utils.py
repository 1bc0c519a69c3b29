import yaml


def load_config(path):
    """Read the service configuration (YAML) from path."""
    with open(path) as f:
        return yaml.safe_load(f)
