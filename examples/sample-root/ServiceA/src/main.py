"""ServiceA entry point."""
from utils import load_config


def main():
    config = load_config("service.yaml")
    print(f"ServiceA listening on {config['port']}")


if __name__ == "__main__":
    main()
