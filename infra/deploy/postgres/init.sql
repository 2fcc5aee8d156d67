-- Run once by the postgres image when its data volume is first initialised
-- (/docker-entrypoint-initdb.d): one database per process. Each process applies its own
-- migrations at start. infra/dev creates the same databases on a local server.
CREATE DATABASE saga_orchestrator;
CREATE DATABASE saga_inventory;
CREATE DATABASE saga_payment;
CREATE DATABASE saga_shipping;
CREATE DATABASE saga_notification;
CREATE DATABASE saga_orders;
