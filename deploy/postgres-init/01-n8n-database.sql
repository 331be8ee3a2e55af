-- Run once by the postgres image on an empty data directory (deploy/compose.yaml):
-- n8n keeps its workflows and executions apart from the business database.
CREATE DATABASE n8n;
