-- Before 8686e4f: a repeated DeviceInformation answer wrote the facts, then the inventory section.
\set n random(1, :devices)
\set t random(1700000000, 1800000000)
SELECT id AS did FROM ids WHERE n = :n \gset
BEGIN;
UPDATE devices SET serial_number = COALESCE(NULL, serial_number), device_name = COALESCE('iPad', device_name), model = COALESCE(NULL, model), model_name = COALESCE(NULL, model_name), product_name = COALESCE(NULL, product_name), os_version = COALESCE(NULL, os_version), build_version = COALESCE(NULL, build_version), is_supervised = COALESCE(1, is_supervised), updated_at = :t::bigint, facts_digest = COALESCE(NULL, facts_digest), plan_inputs_digest = COALESCE(NULL, plan_inputs_digest) WHERE id = :did::text;
INSERT INTO inventory_sections (device_id, section, json, updated_at) VALUES (:did::text, 'device_information', '{"DeviceName": "iPad", "OSVersion": "17.5", "BuildVersion": "21F79", "SerialNumber": "F9FXK0XXXX", "BatteryLevel": 0.5, "AvailableDeviceCapacity": 40.1, "IsSupervised": true, "WiFiMAC": "aa-bb-cc-dd-ee-ff"}', :t::bigint) ON CONFLICT (device_id, section) DO UPDATE SET json = excluded.json, updated_at = excluded.updated_at;
COMMIT;
