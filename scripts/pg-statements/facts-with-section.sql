-- Since 8686e4f: the facts and the inventory section in one statement (UnitOfWork::update_device_facts_and_section).
\set n random(1, :devices)
\set t random(1700000000, 1800000000)
SELECT id AS did FROM ids WHERE n = :n \gset
BEGIN;
WITH updated AS (UPDATE devices SET serial_number = COALESCE(NULL, serial_number), device_name = COALESCE('iPad', device_name), model = COALESCE(NULL, model), model_name = COALESCE(NULL, model_name), product_name = COALESCE(NULL, product_name), os_version = COALESCE(NULL, os_version), build_version = COALESCE(NULL, build_version), is_supervised = COALESCE(1, is_supervised), updated_at = :t::bigint, facts_digest = COALESCE(NULL, facts_digest), plan_inputs_digest = COALESCE(NULL, plan_inputs_digest) WHERE id = :did::text RETURNING id) INSERT INTO inventory_sections (device_id, section, json, updated_at) SELECT id, 'device_information', '{"DeviceName": "iPad", "OSVersion": "17.5", "BuildVersion": "21F79", "SerialNumber": "F9FXK0XXXX", "BatteryLevel": 0.5, "AvailableDeviceCapacity": 40.1, "IsSupervised": true, "WiFiMAC": "aa-bb-cc-dd-ee-ff"}', :t::bigint FROM updated ON CONFLICT (device_id, section) DO UPDATE SET json = excluded.json, updated_at = excluded.updated_at;
COMMIT;
