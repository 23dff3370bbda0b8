"""Event payloads each app publishes: pure, versioned Pydantic models that other apps may
import instead of the publishing app itself."""
