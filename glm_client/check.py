"""`python -m glm_client.check`: `make run` reads the settings before the app starts, so a bad
one (or a bad MODELS_FILE) stops start-up with its one sentence instead of a page error."""

from glm_client.config import ConfigError, Settings

if __name__ == "__main__":
    try:
        Settings.from_env()
    except ConfigError as error:
        raise SystemExit(str(error)) from None
